#!/usr/bin/env bash
# Runtime compatibility matrix: tests/matrix on bundles converted by today's TensorFlow,
# in one venv per runtime.
#
#   scripts/runtime_matrix.sh            every cell
#   CELLS="tflite-2.14.0" scripts/runtime_matrix.sh
#
# 1. the main venv (.venv, TensorFlow) converts the bundles (scripts/make_bundles.py, cached)
#    and builds our wheel (pip wheel --no-deps --no-build-isolation .);
# 2. each cell gets a venv under .cache/venvs/<cell> (python3.11; rebuilt only when its
#    requirement line changes): the runtime, the agent's light dependencies from
#    pyproject.toml (never TensorFlow), pytest; then our wheel with --no-deps;
# 3. tests/matrix runs in each cell (with the installed wheel, not the source tree) and in
#    the main venv (ai-edge-litert 2.x + numpy 2).
# Env: MAIN_PY (.venv/bin/python), PYTHON311 (python3.11), CELLS (space-separated subset).
set -euo pipefail
HERE="$(cd "$(dirname "$0")/.." && pwd)"
cd "$HERE"
MAIN_PY="${MAIN_PY:-$HERE/.venv/bin/python}"
PYTHON311="${PYTHON311:-python3.11}"
VENVS="$HERE/.cache/venvs"
OUT="$HERE/.cache/matrix"
mkdir -p "$VENVS" "$OUT"

# pip warns about every index directory of this machine's pip.conf that does not exist.
pipq() { "$@" 2> >(grep -v "is ignored: it is neither a file nor a directory" >&2); }

# cell | runtime requirements | what select_runtime() must answer
ALL_CELLS=(
  "litert-1.4.0|ai-edge-litert==1.4.0|ai-edge-litert 1.4.0"
  "tflite-2.14.0|tflite-runtime==2.14.0 numpy<2|tflite-runtime 2.14.0"
)
WANT="${CELLS:-litert-1.4.0 tflite-2.14.0 main}"

t_all=$(date +%s)
echo "matrix: converting bundles in the main venv"
"$MAIN_PY" scripts/make_bundles.py 2> >(grep -E "^make_bundles|Error|error" >&2) \
  | tail -1 >"$OUT/bundles.json"
export EDGE_MATRIX_BUNDLES="$OUT/bundles.json"
cat "$EDGE_MATRIX_BUNDLES"

rm -rf "$OUT/wheel" && mkdir -p "$OUT/wheel"
pipq "$MAIN_PY" -m pip wheel -q --no-deps --no-build-isolation -w "$OUT/wheel" . >/dev/null
WHEEL="$(ls "$OUT"/wheel/edge_inference-*.whl)"
# The agent's light dependencies, straight from pyproject.toml (the runtime comes per cell).
LIGHT="$("$PYTHON311" - <<'PY'
import tomllib
deps = tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]
print(" ".join(d.split(";")[0].replace(" ", "") for d in deps
               if not d.startswith(("ai-edge-litert", "tomli"))))
PY
)"
TEST_DEPS="pytest pytest-timeout"

declare -A RESULT DURATION
failed=0
for cell in "${ALL_CELLS[@]}"; do
  IFS='|' read -r name reqs expect <<<"$cell"
  [[ " $WANT " == *" $name "* ]] || continue
  t0=$(date +%s)
  venv="$VENVS/$name"
  line="$reqs $LIGHT $TEST_DEPS"
  if [[ ! -x "$venv/bin/python" || "$(cat "$venv/.edge-requirements" 2>/dev/null)" != "$line" ]]; then
    echo "matrix[$name]: creating $venv"
    rm -rf "$venv"
    "$PYTHON311" -m venv "$venv"
    # shellcheck disable=SC2086  # word splitting of the requirement lists is intended
    pipq "$venv/bin/pip" install -q --disable-pip-version-check $reqs $LIGHT $TEST_DEPS
    echo "$line" >"$venv/.edge-requirements"
  fi
  pipq "$venv/bin/pip" install -q --disable-pip-version-check --no-deps --force-reinstall "$WHEEL"
  echo "matrix[$name]: $("$venv/bin/pip" list 2>/dev/null | grep -iE '^(ai-edge-litert|tflite-runtime|numpy) ' | tr -s ' ' | paste -sd, -)"
  # pytest's console script, not `python -m pytest`: the cwd must not shadow the wheel.
  if (cd "$HERE" && EDGE_MATRIX_EXPECT="$expect" EDGE_MATRIX_INSTALLED=1 \
      "$venv/bin/pytest" tests/matrix -q -p no:cacheprovider); then
    RESULT[$name]=pass
  else
    RESULT[$name]=FAIL; failed=1
  fi
  DURATION[$name]=$(( $(date +%s) - t0 ))
done

if [[ " $WANT " == *" main "* ]]; then
  t0=$(date +%s)
  echo "matrix[main]: $("$MAIN_PY" -m pip list 2>/dev/null | grep -iE '^(ai-edge-litert|numpy) ' | tr -s ' ' | paste -sd, -)"
  if "$HERE/.venv/bin/pytest" tests/matrix -q -p no:cacheprovider; then
    RESULT[main]=pass
  else
    RESULT[main]=FAIL; failed=1
  fi
  DURATION[main]=$(( $(date +%s) - t0 ))
fi

echo
echo "runtime matrix ($(( $(date +%s) - t_all )) s in all):"
for name in "${!RESULT[@]}"; do
  printf '  %-16s %-5s %4s s\n' "$name" "${RESULT[$name]}" "${DURATION[$name]}"
done
exit $failed
