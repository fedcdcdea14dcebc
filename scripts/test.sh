#!/usr/bin/env bash
# Set up and run every check: lint, types, the test suite (real TF, LiteRT, Mosquitto).
# Usage: scripts/test.sh [pytest args...]
set -uo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh converter,fleet,dev,quant || exit 1  # quant: .venv-quant (--mode int4-weights)

echo "== ruff"; .venv/bin/ruff check . || exit 1
echo "== mypy"; .venv/bin/mypy edge_agent converter fleet || exit 1
echo "== pytest"
.venv/bin/python -m pytest "$@"
rc=$?
if [ "$rc" -eq 5 ]; then
  echo "pytest collected no tests: treating as failure"; exit 1
fi
[ "$rc" -eq 0 ] || exit "$rc"
if [ -x scripts/ci_boards.sh ] && [ "${EDGE_SKIP_BOARDS:-0}" != "1" ]; then
  echo "== boards (runtime matrix + aarch64 emulation)"
  scripts/ci_boards.sh || exit 1
fi
echo "all checks passed"
