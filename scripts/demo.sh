#!/usr/bin/env bash
# Set up and run the end-to-end demo: train → convert → wrap a .tflite → serve → telemetry →
# signed update → forged update rejected → rollback → shadow run blocks a bad candidate →
# encrypted update (refused on a board it is not sealed for, committed sealed) → both
# dashboards (kept up until Ctrl-C when run from a terminal; --exit stops at once). Needs no broker and no model: set EDGE_DEMO_BROKER=mqtt://…
# to use your own broker instead of the embedded one. Output goes to ./demo-out/.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh converter,fleet,demo
exec .venv/bin/python scripts/demo.py "$@"
