#!/usr/bin/env bash
# aarch64 emulation check: the agent on an emulated Raspberry Pi 4 (Debian bookworm arm64,
# Python 3.11.2, glibc 2.36) under qemu-user with QEMU_CPU=cortex-a72, installed offline from
# an aarch64 wheelhouse with the install guide's commands (docs/install.md).
#
#   scripts/aarch64_smoke.sh
#
# Steps (each timed; the total is printed and kept in .cache/aarch64/smoke-report.json):
#   rootfs      scripts/aarch64_rootfs.sh (cached between runs)
#   bundles     digits + MobileNetV2 int8 from the main venv (or $EDGE_MATRIX_BUNDLES)
#   wheelhouse  python -m fleet.wheelhouse qemu-aarch64 / rpi-bookworm-fallback
#   install     python3 -m venv + pip install --no-index --find-links (two venvs, fresh)
#   smoke       pytest tests/boards/test_aarch64_smoke.py: golden vectors, REST and gRPC predict,
#               MQTT birth to the host's Mosquitto, the 2.3.0 SIGSEGV → tflite fallback
# Env: MAIN_PY (.venv/bin/python), QEMU_CPU (cortex-a72), DEBIAN_MIRROR.
set -euo pipefail
HERE="$(cd "$(dirname "$0")/.." && pwd)"
cd "$HERE"
MAIN_PY="${MAIN_PY:-$HERE/.venv/bin/python}"
CACHE="$HERE/.cache/aarch64"
ROOTFS="$CACHE/bookworm-rootfs"
WH="$CACHE/wheelhouse"
REPORT="$CACHE/smoke-report.json"
export QEMU_CPU="${QEMU_CPU:-cortex-a72}"
mkdir -p "$CACHE"
rm -f "$REPORT"

declare -a TIMES
T_ALL=$(date +%s)
step() { echo "== aarch64: $1"; T0=$(date +%s); }
done_step() { TIMES+=("$1=$(( $(date +%s) - T0 ))"); }
pipq() { "$@" 2> >(grep -v "is ignored: it is neither a file nor a directory" >&2); }

step "root filesystem"
scripts/aarch64_rootfs.sh "$ROOTFS"
done_step rootfs

step "bundles"
if [[ -z "${EDGE_MATRIX_BUNDLES:-}" ]]; then
  "$MAIN_PY" scripts/make_bundles.py --only digits,mobilenet_v2 2> >(grep -E "^make_bundles" >&2) \
    | tail -1 >"$CACHE/bundles.json"
  export EDGE_MATRIX_BUNDLES="$CACHE/bundles.json"
fi
cat "$EDGE_MATRIX_BUNDLES"
done_step bundles

step "wheelhouses"
# + the grpc extra's aarch64 wheels (grpcio, protobuf: pyproject's [grpc]): one gRPC Predict
GRPC_REQS=$("$MAIN_PY" -c 'import tomllib; print(" ".join("--extra=" + r for r in tomllib.load(open("pyproject.toml", "rb"))["project"]["optional-dependencies"]["grpc"]))')
# shellcheck disable=SC2086
pipq "$MAIN_PY" -m fleet.wheelhouse qemu-aarch64 --out "$WH/qemu-aarch64" $GRPC_REQS | grep -v "^  "
OWN="$(ls "$WH"/qemu-aarch64/edge_inference-*.whl)"
pipq "$MAIN_PY" -m fleet.wheelhouse rpi-bookworm-fallback --out "$WH/rpi-bookworm-fallback" \
  --wheel "$OWN" | grep -v "^  "
done_step wheelhouse

step "install (docs/install.md, step 3, with python3 = the emulated python3.11)"
# On the board `python3` is /usr/bin/python3; here the rootfs's python3.11 runs under qemu
# through the host wrapper that scripts/aarch64_rootfs.sh writes.
PYTHON3="$ROOTFS/usr/local/bin/python3.11"
rm -rf "$ROOTFS/opt/edge-agent" "$ROOTFS/opt/fallback"
(
  "$PYTHON3" -m venv "$ROOTFS/opt/edge-agent"
  pipq "$ROOTFS/opt/edge-agent/bin/pip" install --no-index --find-links "$WH/qemu-aarch64" edge-inference \
    | { grep -E "^(Successfully|ERROR)" || true; }
  # the grpc extra, as docs/install.md's gRPC section adds it (the smoke test sends a Predict)
  pipq "$ROOTFS/opt/edge-agent/bin/pip" install --no-index --find-links "$WH/qemu-aarch64" 'edge-inference[grpc]' \
    | { grep -E "^(Successfully|ERROR)" || true; }
) &
P1=$!
(
  "$PYTHON3" -m venv "$ROOTFS/opt/fallback"
  pipq "$ROOTFS/opt/fallback/bin/pip" install --no-index --find-links "$WH/rpi-bookworm-fallback" \
    edge-inference tflite-runtime | { grep -E "^(Successfully|ERROR)" || true; }
) &
P2=$!
wait $P1
wait $P2
for v in edge-agent fallback; do
  echo "  /opt/$v: $("$ROOTFS/opt/$v/bin/pip" list 2>/dev/null | grep -iE '^(edge-inference|ai-edge-litert|tflite-runtime|numpy|grpcio|protobuf) ' | tr -s ' ' | paste -sd, -)"
done
done_step install

step "smoke test on emulated Cortex-A72"
rc=0
EDGE_AARCH64_ROOTFS="$ROOTFS" EDGE_AARCH64_VENV="$ROOTFS/opt/edge-agent" \
EDGE_AARCH64_FALLBACK_VENV="$ROOTFS/opt/fallback" EDGE_AARCH64_EXPECT="ai-edge-litert 2.1.6" \
EDGE_AARCH64_REPORT="$REPORT" \
  "$HERE/.venv/bin/pytest" tests/boards/test_aarch64_smoke.py -q -p no:cacheprovider || rc=$?
done_step smoke

TOTAL=$(( $(date +%s) - T_ALL ))
"$MAIN_PY" - "$REPORT" "$TOTAL" "${TIMES[@]}" <<'PY'
import json, sys
from pathlib import Path
p = Path(sys.argv[1]); doc = json.loads(p.read_text()) if p.exists() else {}
doc["steps_s"] = {k: int(v) for k, v in (a.split("=") for a in sys.argv[3:])}
doc["total_s"] = int(sys.argv[2])
p.write_text(json.dumps(doc, indent=1) + "\n")
print(json.dumps(doc, indent=1))
PY
echo "aarch64 emulation check: $([[ $rc == 0 ]] && echo passed || echo FAILED) in ${TOTAL} s" \
  "(runtime: $(grep -o '"runtime": "[^"]*"' "$REPORT" | head -1 | cut -d'"' -f4))"
exit $rc
