#!/usr/bin/env bash
# CI step "runs on the boards" (issue 8): the runtime compatibility matrix, then the aarch64
# emulation check. scripts/test.sh calls it after the main test suite (which already ran
# tests/matrix in the main venv, so the matrix here runs only the other runtime venvs).
#
#   scripts/ci_boards.sh          CELLS="litert-1.4.0 tflite-2.14.0 main" to add the main venv
#
# Needs (installed here when missing, as root or with sudo): debootstrap, qemu-user-static,
# mosquitto; python3.11 for the runtime venvs; network to PyPI and deb.debian.org.
set -uo pipefail
cd "$(dirname "$0")/.."
sudo_() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }
need=()
for p in debootstrap qemu-user-static mosquitto; do
  dpkg -s "$p" >/dev/null 2>&1 || need+=("$p")
done
if [ "${#need[@]}" -gt 0 ]; then
  echo "ci_boards: installing ${need[*]} (apt)"
  sudo_ env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  sudo_ env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    "${need[@]}" >/dev/null || { echo "ci_boards: apt-get install failed" >&2; exit 1; }
fi

t0=$(date +%s)
CELLS="${CELLS:-litert-1.4.0 tflite-2.14.0}" scripts/runtime_matrix.sh
matrix_rc=$?
t1=$(date +%s)
EDGE_MATRIX_BUNDLES="$PWD/.cache/matrix/bundles.json" scripts/aarch64_smoke.sh
emu_rc=$?
t2=$(date +%s)

echo
echo "boards: runtime matrix $([ $matrix_rc -eq 0 ] && echo passed || echo FAILED) in $((t1 - t0)) s;" \
     "aarch64 emulation $([ $emu_rc -eq 0 ] && echo passed || echo FAILED) in $((t2 - t1)) s;" \
     "total $((t2 - t0)) s"
[ $matrix_rc -eq 0 ] && [ $emu_rc -eq 0 ]
