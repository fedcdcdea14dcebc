#!/usr/bin/env bash
# Set up and run every check: lint, types, the test suite (real TF, LiteRT, Mosquitto).
# Usage: scripts/test.sh [pytest args...]
#
# Order (2 cores in CI; the timings are in README.md#tests):
#   setup → [boards in the background] → ruff → mypy → pytest -n 2 (not serial)
#   → wait for boards → pytest (serial tests, alone on the machine)
# The boards step (scripts/ci_boards.sh: runtime matrix venvs, aarch64 under qemu) shares the
# CPU only with the parallel run, whose tests carry no timing bound; the `serial` tests
# (timing, rate and memory bounds) run last, after it, with nothing else of ours running.
set -uo pipefail
cd "$(dirname "$0")/.."
t_start=$(date +%s)
step_t0=$t_start
timed() { local now; now=$(date +%s); echo "== $1: $((now - step_t0)) s"; step_t0=$now; }

scripts/setup.sh converter,fleet,dev,quant || exit 1  # quant: .venv-quant (--mode int4-weights)
timed "setup"

boards_pid=""
boards_log=".cache/ci_boards.log"
if [ -x scripts/ci_boards.sh ] && [ "${EDGE_SKIP_BOARDS:-0}" != "1" ]; then
  mkdir -p .cache
  echo "== boards (runtime matrix + aarch64 emulation): started in the background, log $boards_log"
  setsid scripts/ci_boards.sh >"$boards_log" 2>&1 &  # its own process group: killed whole
  boards_pid=$!
  trap '[ -z "$boards_pid" ] || kill -- "-$boards_pid" 2>/dev/null' EXIT
fi
wait_boards() {  # prints the boards log; returns its exit code (0 when it was skipped)
  [ -n "$boards_pid" ] || return 0
  wait "$boards_pid"; local rc=$?
  boards_pid=""
  echo "== boards log ($boards_log)"; cat "$boards_log"
  return "$rc"
}

echo "== ruff"; .venv/bin/ruff check . || exit 1
timed "ruff"
echo "== mypy"; .venv/bin/mypy edge_agent converter fleet || exit 1
timed "mypy"
# pytest in two runs: everything not marked `serial` in EDGE_TEST_WORKERS pytest-xdist
# workers (session fixtures build cached artefacts under a file lock, tests/build_lock.py),
# then the `serial` tests in one process.
workers="${EDGE_TEST_WORKERS:-2}"
echo "== pytest (not serial, -n $workers)"
.venv/bin/python -m pytest -n "$workers" --dist loadgroup -m "not serial" --durations=25 "$@"
rc_par=$?
timed "pytest (not serial)"
wait_boards
rc_boards=$?
timed "boards (after pytest, waited for)"
echo "== pytest (serial)"
.venv/bin/python -m pytest -p no:xdist -m serial --durations=10 "$@"
rc_ser=$?
timed "pytest (serial)"
echo "== total: $(( $(date +%s) - t_start )) s"
# exit 5 = "no tests collected": fine for one run (a subset without serial tests), a failure
# when neither run collected anything.
for rc in "$rc_par" "$rc_ser"; do
  if [ "$rc" -ne 0 ] && [ "$rc" -ne 5 ]; then exit "$rc"; fi
done
if [ "$rc_par" -eq 5 ] && [ "$rc_ser" -eq 5 ]; then
  echo "pytest collected no tests: treating as failure"; exit 1
fi
[ "$rc_boards" -eq 0 ] || { echo "boards FAILED"; exit 1; }
echo "all checks passed"
