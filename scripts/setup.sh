#!/usr/bin/env bash
# Set up a fresh Debian machine for edge-inference: system packages and a project venv.
# Idempotent; safe to run again. Usage: scripts/setup.sh [extras]   (default: converter,fleet,dev)
# The component `quant` (e.g. scripts/setup.sh converter,fleet,dev,quant) is not an extra: it
# makes .venv-quant, ai-edge-quantizer's own venv for --mode int4-weights / int8-weights
# (it pins its own ai-edge-litert, so it stays out of .venv and of the agent's install).
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-converter,fleet,dev}"
quant=0
if [[ ",$extras," == *",quant,"* ]]; then
  quant=1
  extras="$(echo ",$extras," | sed 's/,quant,/,/g; s/^,//; s/,$//')"
fi
QUANTIZER="ai-edge-quantizer==0.10.0"

sudo_() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }
need=()
for p in mosquitto python3-venv ejabberd; do  # ejabberd: the two-node cluster tests (mod_mqtt)
  dpkg -s "$p" >/dev/null 2>&1 || need+=("$p")
done
for p in chromium chromium-driver; do dpkg -s "$p" >/dev/null 2>&1 || need+=("$p"); done  # dashboard tests
dpkg -s prometheus >/dev/null 2>&1 || need+=(prometheus)  # promtool check metrics (tests)
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
spec="."; [ -z "$extras" ] || spec=".[$extras]"
echo "setup: pip install -e $spec"
.venv/bin/python -m pip install -q -e "$spec"
if [[ ",$extras," == *",dev,"* ]]; then
  # TF Serving's official Python client, for the gRPC tests: it pins the full `tensorflow`
  # (the converter extra brings tensorflow-cpu), so without its dependencies.
  .venv/bin/python -m pip install -q --no-deps "tensorflow-serving-api>=2.16"
fi
if [ "$quant" -eq 1 ]; then
  if [ ! -x .venv-quant/bin/python ]; then
    echo "setup: creating .venv-quant with $($PY --version)"
    "$PY" -m venv .venv-quant
  fi
  if ! .venv-quant/bin/python -c "import ai_edge_quantizer" 2>/dev/null; then
    echo "setup: pip install $QUANTIZER into .venv-quant"
    .venv-quant/bin/python -m pip install -q "$QUANTIZER"
  fi
fi
