#!/usr/bin/env bash
# Set up a fresh Debian machine for edge-inference: system packages and a project venv.
# Idempotent; safe to run again. Usage: scripts/setup.sh [extras]   (default: converter,fleet,dev)
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-converter,fleet,dev}"

sudo_() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }
need=()
for p in mosquitto python3-venv ejabberd; do  # ejabberd: the two-node cluster tests (mod_mqtt)
  dpkg -s "$p" >/dev/null 2>&1 || need+=("$p")
done
for p in chromium chromium-driver; do dpkg -s "$p" >/dev/null 2>&1 || need+=("$p"); done  # dashboard tests
if [ "${#need[@]}" -gt 0 ]; then
  echo "setup: installing ${need[*]} (apt)"
  sudo_ env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  sudo_ env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
# Debian starts a system mosquitto on :1883; our tests and demo start their own brokers.

PY="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv with $($PY --version)"
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
echo "setup: pip install -e .[$extras]"
.venv/bin/python -m pip install -q -e ".[$extras]"
if [[ ",$extras," == *",dev,"* ]]; then
  # TF Serving's official Python client, for the gRPC tests: it pins the full `tensorflow`
  # (the converter extra brings tensorflow-cpu), so without its dependencies.
  .venv/bin/python -m pip install -q --no-deps "tensorflow-serving-api>=2.16"
fi
