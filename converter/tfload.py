"""Import TensorFlow quietly and load Keras / SavedModel sources.

Raises :class:`~converter.errors.ModelSourceError`.
"""

from __future__ import annotations

import contextlib
import io
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from converter.errors import ModelSourceError


def import_tf() -> Any:
    """Import TensorFlow with its C++ and Python logging turned down."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
    import tensorflow as tf

    tf.get_logger().setLevel("ERROR")
    with contextlib.suppress(Exception):
        import absl.logging

        absl.logging.set_verbosity(absl.logging.ERROR)
    return tf


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Swallow the chatter TF/Keras print on stdout during export and conversion."""
    with contextlib.redirect_stdout(io.StringIO()):
        yield


@dataclass
class SourceModel:
    """A float model ready for conversion and reference inference."""

    kind: str  # keras | saved_model
    path: Path
    input_shape: tuple[int, ...]  # without batch
    make_converter: Callable[[], Any]
    predict: Callable[[np.ndarray], np.ndarray]


def load_source(path: str | Path) -> SourceModel:
    """Open a ``.keras`` / ``.h5`` file or a SavedModel directory."""
    p = Path(path)
    if not p.exists():
        raise ModelSourceError(f"{p}: no such model file or directory")
    tf = import_tf()
    if p.is_dir():
        if not (p / "saved_model.pb").exists() and not (p / "saved_model.pbtxt").exists():
            raise ModelSourceError(f"{p}: directory is not a SavedModel (no saved_model.pb)")
        try:
            with quiet():
                loaded = tf.saved_model.load(str(p))
            fn = loaded.signatures["serving_default"]
        except KeyError as e:
            raise ModelSourceError(f"{p}: SavedModel has no 'serving_default' signature") from e
        except Exception as e:
            raise ModelSourceError(f"{p}: cannot load SavedModel ({_short(e)})") from e
        specs = fn.structured_input_signature[1]
        if len(specs) != 1:
            raise ModelSourceError(f"{p}: expected one input, signature has {len(specs)}")
        in_key, spec = next(iter(specs.items()))
        shape = tuple(int(d) for d in spec.shape[1:])

        def sm_predict(x: np.ndarray) -> np.ndarray:
            out = fn(**{in_key: tf.constant(x, dtype=spec.dtype)})
            return np.asarray(next(iter(out.values())))

        return SourceModel("saved_model", p, shape,
                           lambda: tf.lite.TFLiteConverter.from_saved_model(str(p)), sm_predict)
    if p.suffix not in (".keras", ".h5", ".hdf5"):
        raise ModelSourceError(f"{p}: expected a .keras or .h5 file, or a SavedModel directory")
    try:
        with quiet():
            model = tf.keras.models.load_model(str(p), compile=False)
    except Exception as e:
        raise ModelSourceError(f"{p}: cannot load Keras model ({_short(e)})") from e
    if len(model.inputs) != 1:
        raise ModelSourceError(f"{p}: expected a model with one input, got {len(model.inputs)}")
    shape = tuple(int(d) for d in model.inputs[0].shape[1:])

    def keras_predict(x: np.ndarray) -> np.ndarray:
        return np.asarray(model(x, training=False))

    return SourceModel("keras", p, shape,
                       lambda: tf.lite.TFLiteConverter.from_keras_model(model), keras_predict)


def _short(e: BaseException) -> str:
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    return (lines[0] if lines else type(e).__name__)[:300]
