"""Low-bit weights: ``--mode int4-weights`` / ``int8-weights`` through ai-edge-quantizer.

Weight-only quantization (the quantizer's ``weight_only_wi4_afp32`` / ``_wi8_afp32``
recipes): every supported op's weights become int4 or int8 with per-channel scales and a
DEQUANTIZE before the op; activations and IO stay float32, so no calibration is needed.
The *dynamic* recipes (``dynamic_wi4_afp32``) are not used: their int4 hybrid kernels gave
wrong outputs without any error on ai-edge-litert 1.0.1 (MobileNetV2 max diff 0.78, top-1
changed) and NaN on tflite-runtime 2.14.0.

ai-edge-quantizer pins its own ai-edge-litert, so it never enters the converter's venv or
the agent's install: it lives in a venv of its own (``.venv-quant`` at the repo root, made
by ``scripts/setup.sh quant``; or any python named by ``EDGE_QUANT_PYTHON``). The float
.tflite the converter produced goes to :mod:`converter.lowbit_child` in that venv, as a
subprocess with a time limit (killed with its process group when over) and size caps on
what goes in, what comes back and what it prints.

Which runtimes run the result (:data:`REQUIRES`), found by loading and invoking weight-only
models (a small CNN and MobileNetV2) on each runtime of the matrix: int4 weights run on
ai-edge-litert 1.0.1 (its first release), 1.4.0 and 2.3.0 and on tf.lite 2.21.0;
tflite-runtime 2.14.0 (its last release) refuses them ("DEQUANTIZE failed to prepare":
no int4 input). int8 weights run on all of them. The requirement goes into the bundle's
manifest (``requires``) so an agent whose runtime cannot run the model refuses it before
any load (``runtime_unsupported``); a profile whose first runtime cannot run it is refused
here (:func:`check_profile`).

Raises ConverterEnvironmentError (no quantizer venv, the quantizer failed or timed out)
and OptionError (a profile that cannot run the mode).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import tempfile
from pathlib import Path

from converter.errors import ConverterEnvironmentError, OptionError
from converter.modes import LOWBIT_MODES
from edge_agent.manifest import Requires
from edge_agent.profiles import DeviceProfile
from edge_agent.runtime.backends import parse_version

__all__ = ["DEFAULT_TIMEOUT_S", "QUANT_PYTHON_ENV", "RECIPES", "REQUIRES", "check_profile",
           "preflight", "quant_python", "quantize_weights", "requires_for"]

QUANT_PYTHON_ENV = "EDGE_QUANT_PYTHON"  # a python with ai-edge-quantizer (default .venv-quant)
QUANT_VENV = Path(__file__).resolve().parents[1] / ".venv-quant"
RECIPES = {"int4-weights": "weight_only_wi4_afp32", "int8-weights": "weight_only_wi8_afp32"}
REQUIRES = {  # measured, see the module docstring; tflite-runtime cannot run int4 weights
    "int4-weights": Requires(runtimes={"ai-edge-litert": "1.0.1", "tensorflow": "2.21.0"}),
    "int8-weights": Requires(),
}
DEFAULT_TIMEOUT_S = 600.0  # seconds: MobileNetV2 takes about 1 s
MAX_INPUT_BYTES = 2 << 30  # a flatbuffer's own limit
OUTPUT_SLACK_BYTES = 1 << 20  # weight quantization shrinks: output <= input + this
MAX_LOG_BYTES = 16 << 10  # of the child's stdout/stderr kept for messages
CHILD = Path(__file__).with_name("lowbit_child.py")


def requires_for(mode: str) -> Requires:
    """What a device needs to run a model of ``mode`` (empty for the other modes)."""
    return REQUIRES.get(mode, Requires())


def preflight(profile: DeviceProfile, mode: str, io_dtype: str | None) -> None:
    """Before TensorFlow: float IO, a profile that runs ``mode``, the quantizer's venv.

    Raises OptionError, ConverterEnvironmentError."""
    if io_dtype not in (None, "float32"):
        raise OptionError(f"--mode {mode} keeps float32 input and output (weights only are "
                          f"quantized); drop --io-dtype {io_dtype}")
    check_profile(profile, mode)
    quant_python()


def check_profile(profile: DeviceProfile, mode: str) -> None:
    """The profile's first runtime (the one its agents prefer) must run ``mode``.

    Raises OptionError naming the runtime and what the mode needs."""
    req = requires_for(mode)
    if not req.runtimes or not profile.runtimes:
        return
    first = profile.runtimes[0]
    floor = req.runtimes.get(first.name)
    if floor is None or parse_version(first.min_version) < parse_version(floor):
        needs = " or ".join(f"{n} >= {v}" for n, v in req.runtimes.items())
        raise OptionError(f"profile {profile.name} runs {first.name} >= {first.min_version} "
                          f"first, which cannot run --mode {mode} (needs {needs}); use "
                          "--mode int8-weights or --mode int8")


def quant_python() -> Path:
    """The python of the quantizer's venv. Raises ConverterEnvironmentError saying how to
    get one when it is missing."""
    named = os.environ.get(QUANT_PYTHON_ENV)
    py = Path(named) if named else QUANT_VENV / "bin" / "python"
    if not (py.is_file() and os.access(py, os.X_OK)):
        where = f"{QUANT_PYTHON_ENV}={named}" if named else str(py)
        raise ConverterEnvironmentError(
            f"--mode {'/'.join(LOWBIT_MODES)} needs ai-edge-quantizer in its own venv, and "
            f"{where} is not an executable python: run scripts/setup.sh quant (creates "
            f".venv-quant) or set {QUANT_PYTHON_ENV} to a python with ai-edge-quantizer 0.10")
    return py


def quantize_weights(float_tflite: bytes, mode: str, *, timeout_s: float = DEFAULT_TIMEOUT_S,
                     python: Path | None = None) -> bytes:
    """``float_tflite`` with int4 or int8 weights (``mode`` in ``LOWBIT_MODES``), quantized
    by ai-edge-quantizer in its venv (``python``, default :func:`quant_python`) within
    ``timeout_s`` seconds.

    Raises OptionError (unknown mode, input over the cap), ConverterEnvironmentError (no
    quantizer venv; the quantizer failed, timed out, or returned something that is not a
    .tflite within the size cap)."""
    if mode not in RECIPES:
        raise OptionError(f"low-bit mode must be one of {', '.join(RECIPES)}, got {mode!r}")
    if not 0 < len(float_tflite) <= MAX_INPUT_BYTES:
        raise OptionError(f"the float model is {len(float_tflite)} bytes; the quantizer takes "
                          f"1..{MAX_INPUT_BYTES}")
    py = python or quant_python()
    max_out = len(float_tflite) + OUTPUT_SLACK_BYTES
    with tempfile.TemporaryDirectory(prefix="edge-convert-lowbit-") as work:
        src, out = Path(work) / "float.tflite", Path(work) / "quant.tflite"
        src.write_bytes(float_tflite)
        said, log = Path(work) / "child.out", Path(work) / "child.log"
        with open(said, "wb") as outf, open(log, "wb") as logf:
            proc = subprocess.Popen(
                [str(py), "-I", str(CHILD), str(src), str(out), RECIPES[mode], str(max_out)],
                stdin=subprocess.DEVNULL, stdout=outf, stderr=logf, start_new_session=True,
                cwd=work)
            try:
                proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                raise ConverterEnvironmentError(
                    f"ai-edge-quantizer did not finish --mode {mode} within {timeout_s:g} s; "
                    "its process was killed") from None
        verdict = _verdict(_tail(said, 4000), _tail(log))
        if proc.returncode != 0 or not verdict.get("ok"):
            raise ConverterEnvironmentError(
                f"ai-edge-quantizer failed on --mode {mode} (exit {proc.returncode}): "
                f"{verdict.get('error') or _tail(log) or 'no message'}")
        size = out.stat().st_size if out.is_file() else 0
        if not 0 < size <= max_out:
            raise ConverterEnvironmentError(f"ai-edge-quantizer wrote {size} bytes for --mode "
                                            f"{mode} (expected 1..{max_out})")
        data = out.read_bytes()
    if data[4:8] != b"TFL3":
        raise ConverterEnvironmentError(f"ai-edge-quantizer's output for --mode {mode} is not "
                                        "a .tflite flatbuffer (no TFL3 identifier)")
    return data


def _verdict(last: str, log: str) -> dict[str, object]:
    """The child's JSON line (its last line of stdout), or an error naming what it said."""
    try:
        v = json.loads(last) if last else None
    except ValueError:
        v = None
    if isinstance(v, dict):
        return v
    return {"ok": False, "error": f"no verdict from the quantizer ({log or 'no output'})"}


def _tail(log: Path, limit: int = 400) -> str:
    """The last line of one of the child's streams, on one line, at most ``limit`` chars."""
    try:
        with open(log, "rb") as f:
            f.seek(max(0, f.seek(0, os.SEEK_END) - MAX_LOG_BYTES))
            text = f.read().decode("utf-8", "replace")
    except OSError:
        return ""
    lines = [ln for ln in text.splitlines() if ln.strip()]
    return " ".join(lines[-1].split())[:limit] if lines else ""
