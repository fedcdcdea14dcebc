"""The quantizer's child process: one float .tflite in, its weight-quantized .tflite out.

Runs under the quantizer's own venv (``.venv-quant``: ``ai-edge-quantizer`` with the
LiteRT it pins), as ``python -I lowbit_child.py IN OUT RECIPE MAX_OUT_BYTES``, started by
:func:`converter.lowbit.quantize_weights` under a time limit. Standard library and
``ai_edge_quantizer`` only: nothing of this project is importable there (``-I``).

Prints one JSON line on stdout: ``{"ok": true, "bytes": N, "quantizer": VERSION}``, or
``{"ok": false, "error": MESSAGE}`` and exit 1. The output is written to a temp file
beside OUT and renamed, so OUT exists only when complete.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

RECIPES = ("weight_only_wi4_afp32", "weight_only_wi8_afp32")  # converter.lowbit.RECIPES


def _say(ok: bool, **fields: Any) -> int:
    print(json.dumps({"ok": ok, **fields}), flush=True)
    return 0 if ok else 1


def main(argv: list[str]) -> int:
    if len(argv) != 4 or argv[2] not in RECIPES or not argv[3].isdigit():
        return _say(False, error=f"usage: lowbit_child.py IN OUT {{{','.join(RECIPES)}}} "
                    f"MAX_OUT_BYTES, got {argv!r:.200}")
    src, out, recipe_name, max_out = argv[0], argv[1], argv[2], int(argv[3])
    try:
        import importlib.metadata

        from ai_edge_quantizer import quantizer, recipe
    except ImportError as e:
        return _say(False, error=f"ai-edge-quantizer does not import here ({e})")
    version = importlib.metadata.version("ai-edge-quantizer")
    with open(src, "rb") as f:
        model = f.read()
    try:
        q = quantizer.Quantizer(model, getattr(recipe, recipe_name)())
        result = q.quantize(enable_progress_bar=False, enable_progress_report=False)
    except Exception as e:  # the quantizer's own failure, reported as one line
        return _say(False, error=f"ai-edge-quantizer {version} failed: {type(e).__name__}: "
                    f"{' '.join(str(e).split())[:400]}")
    data = bytes(result.quantized_model or b"")
    if not data or len(data) > max_out:
        return _say(False, error=f"ai-edge-quantizer {version} returned {len(data)} bytes "
                    f"(expected 1..{max_out})")
    tmp = f"{out}.part"
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, out)
    return _say(True, bytes=len(data), quantizer=version)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
