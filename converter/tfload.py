"""Import TensorFlow quietly, open Keras / SavedModel sources, export a fixed-batch graph.

Every source is re-exported as a SavedModel whose one signature takes a batch of
exactly one sample. A dynamic batch dimension makes TFLite emit ``SHAPE`` /
``STRIDED_SLICE`` / ``PACK`` ops in int32 around every ``RESHAPE``: they are not
quantized, the Edge TPU compiler refuses dynamic shapes, and an edge device runs one
frame at a time anyway. The agent batches by looping (``LoadedModel.invoke_raw``).

Raises :class:`~converter.errors.ModelSourceError`.
"""

from __future__ import annotations

import contextlib
import io
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from converter.errors import ConverterEnvironmentError, ModelSourceError

KERAS_SUFFIXES = (".keras", ".h5", ".hdf5")
SIGNATURE = "serving_default"


def import_tf() -> Any:
    """Import TensorFlow with its C++ and Python logging turned down.

    Raises ConverterEnvironmentError when TensorFlow is not installed (agent-only install).
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
    try:
        import tensorflow as tf
    except ImportError as e:
        raise ConverterEnvironmentError(
            f"TensorFlow is not importable here ({e}); the converter needs it: "
            "pip install 'edge-inference[converter]'") from e

    tf.get_logger().setLevel("ERROR")
    with contextlib.suppress(Exception):
        import absl.logging

        absl.logging.set_verbosity(absl.logging.ERROR)
    return tf


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Swallow the chatter TF/Keras print through Python's stdout (see also converter.quiet)."""
    with contextlib.redirect_stdout(io.StringIO()):
        yield


@dataclass
class SourceModel:
    """A float model ready for export: its kind, path and per-sample input shape."""

    kind: str  # keras | saved_model
    path: Path
    input_shape: tuple[int, ...]  # without batch
    _export: Any  # (directory: str) -> None, writes the fixed-batch SavedModel

    def export(self, directory: Path) -> Path:
        """Write a SavedModel with one ``serving_default`` signature of batch 1.

        Raises ModelSourceError when TensorFlow cannot trace the model.
        """
        out = Path(directory) / "fixed-batch"
        try:
            with quiet():
                self._export(str(out))
        except Exception as e:
            raise ModelSourceError(f"{self.path}: cannot trace the model for export "
                                   f"({short_error(e)})") from e
        return out


def check_model_path(path: Path) -> None:
    """Cheap checks before TensorFlow is imported: exists, right kind of file/folder."""
    if not path.exists():
        raise ModelSourceError(f"{path}: no such model file or directory")
    if path.is_dir():
        if not (path / "saved_model.pb").is_file() and not (path / "saved_model.pbtxt").is_file():
            raise ModelSourceError(f"{path}: directory is not a SavedModel (no saved_model.pb)")
        return
    if path.suffix.lower() not in KERAS_SUFFIXES:
        raise ModelSourceError(f"{path}: expected a .keras or .h5 file, or a SavedModel directory")
    try:
        with open(path, "rb") as f:
            head = f.read(8)
    except OSError as e:
        raise ModelSourceError(f"{path}: cannot read model file ({e.strerror})") from e
    if path.suffix.lower() == ".keras" and not head.startswith(b"PK"):
        raise ModelSourceError(f"{path}: corrupt .keras file (not a zip archive)")
    if path.suffix.lower() in (".h5", ".hdf5") and not head.startswith(b"\x89HDF\r\n\x1a\n"):
        raise ModelSourceError(f"{path}: corrupt .h5 file (no HDF5 signature)")


def load_source(path: str | Path, *, trust: bool = False) -> SourceModel:
    """Open a ``.keras`` / ``.h5`` file or a SavedModel directory.

    ``trust`` lets Keras deserialize Python lambdas (``safe_mode=False``): that executes
    code stored in the file, so it is only for files the user vouches for.
    """
    p = Path(path)
    check_model_path(p)
    tf = import_tf()
    if p.is_dir():
        return _load_saved_model(tf, p)
    try:
        with quiet():
            model = tf.keras.models.load_model(str(p), compile=False, safe_mode=not trust)
        inputs = list(model.inputs)
    except Exception as e:
        if "safe_mode" in str(e):
            raise ModelSourceError(
                f"{p}: the model holds a Python lambda, which Keras loads only in unsafe mode; "
                "if you trust this file pass --trust-model") from e
        raise ModelSourceError(f"{p}: cannot load Keras model ({short_error(e)})") from e
    if len(inputs) != 1:
        raise ModelSourceError(f"{p}: expected a model with one input, got {len(inputs)}")
    shape = _static_shape(p, inputs[0].shape[1:])
    dtype = inputs[0].dtype

    def export(out: str) -> None:
        import keras

        archive = keras.export.ExportArchive()
        archive.track(model)
        archive.add_endpoint(name=SIGNATURE, fn=lambda x: model(x, training=False),
                             input_signature=[tf.TensorSpec((1, *shape), dtype, name="input")])
        archive.write_out(out, verbose=False)

    return SourceModel("keras", p, shape, export)


def _load_saved_model(tf: Any, p: Path) -> SourceModel:
    try:
        with quiet():
            loaded = tf.saved_model.load(str(p))
    except Exception as e:
        raise ModelSourceError(f"{p}: cannot load SavedModel ({short_error(e)})") from e
    sigs = dict(getattr(loaded, "signatures", {}) or {})
    if SIGNATURE not in sigs:
        have = ", ".join(sigs) or "none"
        raise ModelSourceError(f"{p}: SavedModel has no {SIGNATURE!r} signature (has: {have})")
    fn = sigs[SIGNATURE]
    specs = fn.structured_input_signature[1]
    if len(specs) != 1:
        raise ModelSourceError(f"{p}: expected one input, the signature has {len(specs)}")
    in_key, spec = next(iter(specs.items()))
    shape = _static_shape(p, spec.shape[1:])

    def export(out: str) -> None:
        module = tf.Module()
        module.inner = loaded  # keeps the variables tracked
        module.serve = tf.function(lambda x: fn(**{in_key: x}), input_signature=[
            tf.TensorSpec((1, *shape), spec.dtype, name="input")])
        tf.saved_model.save(module, out, signatures={SIGNATURE: module.serve})

    return SourceModel("saved_model", p, shape, export)


def _static_shape(p: Path, dims: Any) -> tuple[int, ...]:
    shape = tuple(dims)
    if any(d is None for d in shape):
        raise ModelSourceError(f"{p}: input shape {list(shape)} has unknown dimensions besides "
                               "the batch; export the model with a fixed input size")
    return tuple(int(d) for d in shape)


def short_error(e: BaseException) -> str:
    """First meaningful line of an exception message, capped (TF messages run for pages)."""
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    lines = [ln for ln in lines if not ln.startswith(("<unknown>", "Traceback"))] or lines
    return (lines[0] if lines else type(e).__name__)[:300]
