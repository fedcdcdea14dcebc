"""What ``edge-convert prune`` and ``distill`` share: the training side of compression.

Opening a Keras model to train (a ``.keras`` / ``.h5`` file; a SavedModel holds a graph,
not layers to fine-tune), reading its DATA in the formats ``convert --representative /
--eval`` take (:mod:`converter.data`), choosing the loss from the labels and the model's
own outputs, scoring, a time limit on ``fit``, writing the result atomically, and
measuring what the result costs as a full-int8 bundle, raw and zstd-compressed, by the
conversion's own path (:func:`converter.build.build_bundle`).

Raises :class:`~converter.errors.ModelSourceError`, ``DatasetError``, ``OptionError``
and ``OutputError``; conversion errors as :mod:`converter.build` raises them.
"""

from __future__ import annotations

import math
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from converter import npzdata
from converter.data import Dataset, check_data_path, class_indices, load_dataset
from converter.errors import DatasetError, ModelSourceError, OptionError, OutputError
from converter.tfload import SourceInput, check_model_path, import_tf, quiet, short_error

PREDICT_BATCH = 256
DEFAULT_PROFILE = "generic-x86_64"


def load_keras(path: Path, what: str, *, trust: bool = False) -> Any:
    """A one-input, one-output Keras model to train, uncompiled."""
    check_model_path(path)
    if path.is_dir():
        raise ModelSourceError(f"{path}: {what} must be a .keras or .h5 file; a SavedModel "
                               "holds a frozen graph, not layers to train")
    import_tf()
    import keras

    try:
        with quiet():
            model = keras.models.load_model(str(path), compile=False, safe_mode=not trust)
    except Exception as e:
        raise ModelSourceError(f"{path}: cannot load Keras model ({short_error(e)})") from e
    ins, outs = list(getattr(model, "inputs", None) or []), list(model.outputs or [])
    if len(ins) != 1 or len(outs) != 1:
        raise ModelSourceError(f"{path}: {what} must have one input and one output, it has "
                               f"{len(ins)} and {len(outs)}")
    if any(d is None for d in ins[0].shape[1:]):
        raise ModelSourceError(f"{path}: input shape {list(ins[0].shape)} has unknown "
                               "dimensions besides the batch")
    return model


def source_input(model: Any) -> SourceInput:
    from converter.tfload import signature_name

    t = model.inputs[0]
    return SourceInput(signature_name(str(getattr(t, "name", "") or "input"), "input_0"),
                       tuple(int(d) for d in t.shape[1:]), str(np.dtype(t.dtype)))


def output_shape(model: Any) -> tuple[int | None, ...]:
    return tuple(model.outputs[0].shape[1:])


def check_labelled(path: Path, flag: str) -> None:
    """``path`` is DATA with labels (class subfolders, or ``y`` in every .npz)."""
    check_data_path(path)
    why = f"{flag} {path}: {flag.lstrip('-')} data needs labels"
    if path.suffix == ".npy":
        raise DatasetError(f"{why}; a .npy holds x only (use a .npz with x and y, or class "
                           "subfolders)")
    if path.is_dir() and npzdata.is_shard_dir(path):
        files = npzdata.shards(path)
    elif path.is_dir():
        return
    else:
        files = [path]
    for f in files:
        if "y" not in npzdata.members(f):
            raise DatasetError(f"{why} ('y' in {f.name})")


def load_data(path: Path, model: Any, *, labelled: bool) -> Dataset:
    """Every sample of ``path`` for ``model``'s input (the bundle's default preprocessing:
    uint8 pixels / 255)."""
    from converter.imageinput import image_preprocessing
    from edge_agent.bundle import Preprocessing
    from edge_agent.manifest import TensorSpec

    inp = source_input(model)
    pre = image_preprocessing([TensorSpec(inp.name, (1, *inp.shape), inp.dtype)],
                              Preprocessing(), color=None, image_input=None)
    return load_dataset(path, (inp,), pre, samples=None, need_labels=labelled)


def predict(model: Any, x: np.ndarray) -> np.ndarray:
    with quiet():
        return np.asarray(model.predict(x, batch_size=PREDICT_BATCH, verbose=0))


def is_classifier(model: Any) -> bool:
    shape = output_shape(model)
    return len(shape) == 1 and (shape[0] or 0) > 1


def outputs_probabilities(model: Any, x: np.ndarray) -> bool:
    from converter.goldens import is_probability

    return is_probability(predict(model, x[:64]))


def targets(ds: Dataset, model: Any) -> np.ndarray:
    """``ds.y`` as what the model is fitted to: class indices for a class head, else the
    regression targets as floats shaped like the output."""
    assert ds.y is not None
    if is_classifier(model):
        y = class_indices(ds)
        assert y is not None
        classes = int(output_shape(model)[0] or 0)
        if len(y) and int(y.max()) >= classes:
            raise DatasetError(f"{ds.source}: class index {int(y.max())} but the model "
                               f"outputs {classes} classes")
        return y
    want = math.prod(int(d or 1) for d in output_shape(model))
    t = ds.y.reshape(len(ds.y), -1).astype(np.float32)
    if t.shape[1] != want:
        raise DatasetError(f"{ds.source}: 'y' has {t.shape[1]} value(s) per sample but the "
                           f"model outputs {want}")
    return t.reshape((len(t), *[int(d or 1) for d in output_shape(model)]))


def fit_setup(model: Any, x: np.ndarray, y: np.ndarray | None) -> tuple[Any, str]:
    """The loss to fit with and the metric to report: sparse cross-entropy (on
    probabilities or logits, told from the model's outputs) and top-1 for a class head
    fitted to class indices (or to no labels at all), mean squared error and MAE
    otherwise."""
    import keras

    if is_classifier(model) and (y is None or (y.ndim == 1 and y.dtype.kind in "iu")):
        return (keras.losses.SparseCategoricalCrossentropy(
            from_logits=not outputs_probabilities(model, x)), "top1")
    return keras.losses.MeanSquaredError(), "mae"


def score(model: Any, x: np.ndarray, y: np.ndarray, metric: str) -> float:
    out = predict(model, x)
    if metric == "top1":
        return round(float(np.mean(out.reshape(len(out), -1).argmax(1) == y)), 4)
    return round(float(np.mean(np.abs(out - y.reshape(out.shape)))), 6)


def time_limit(keras: Any, seconds: float | None) -> Any:
    """A callback that stops ``fit`` past ``seconds`` (``.stopped`` says it did)."""

    class TimeLimit(keras.callbacks.Callback):  # type: ignore[misc]
        def __init__(self) -> None:
            super().__init__()
            self.stopped = False
            self.deadline = None if seconds is None else time.monotonic() + seconds

        def on_train_batch_end(self, batch: int, logs: Any = None) -> None:
            if self.deadline is not None and time.monotonic() > self.deadline:
                self.stopped = True
                self.model.stop_training = True

    return TimeLimit()


def check_time_limit(seconds: float) -> None:
    if not 0 < seconds <= 7 * 86400 or math.isnan(seconds):
        raise OptionError(f"--time-limit must be between 0 and 604800 seconds, got {seconds}")


def check_keras_output(out: Path) -> None:
    """``-o`` is a ``.keras`` file we can write (its folder exists); never a directory."""
    if out.suffix != ".keras":
        raise OutputError(f"{out}: the output must be a .keras file")
    if out.exists() and not out.is_file():
        raise OutputError(f"{out}: exists and is not a file")
    parent = out.parent if str(out.parent) else Path(".")
    if not parent.is_dir():
        raise OutputError(f"{out}: cannot write here ({parent} is not a directory)")
    try:
        with tempfile.NamedTemporaryFile(dir=parent, prefix=f".{out.name}.probe-"):
            pass
    except OSError as e:
        raise OutputError(f"{out}: cannot write here ({e.strerror})") from e


def save_keras(model: Any, path: Path) -> None:
    """Save as a plain ``.keras`` file (no optimizer state)."""
    with quiet():
        model.save(str(path))


def write_keras(src: Path, out: Path) -> None:
    """Put the saved file ``src`` at ``out`` atomically (temp beside it, rename)."""
    from edge_agent.fsutil import atomic_write_bytes

    try:
        atomic_write_bytes(out, src.read_bytes(), mode=0o644)
    except OSError as e:
        raise OutputError(f"{out}: cannot write model ({e.strerror or e})") from e


@dataclass(frozen=True)
class Int8Figures:
    """One model as the converter's full-int8 bundle: sizes and accuracy."""

    keras_bytes: int
    float_tflite_bytes: int
    int8_tflite_bytes: int
    int8_tflite_zstd_bytes: int
    bundle_tar_bytes: int
    bundle_zstd_bytes: int
    float_top1: float | None
    int8_top1: float | None

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def int8_figures(model: Path, representative: Path, eval_data: Path | None,
                 profile: str = DEFAULT_PROFILE, samples: int = 200) -> Int8Figures:
    """Convert ``model`` to full int8 for ``profile`` as ``convert`` does (no latency runs)
    and measure the bundle: its tar and that tar in the ``.tar.zst`` frame."""
    from converter.build import ConvertOptions, build_bundle
    from edge_agent import bundle_zstd
    from edge_agent.bundle import tar_bytes

    with tempfile.TemporaryDirectory(prefix="edge-prune-") as tmp:
        opts = ConvertOptions(model=model, representative=representative, eval_data=eval_data,
                              profile=profile, samples=samples, latency_runs=0,
                              output=Path(tmp) / "bundle")
        bundle, report = build_bundle(opts)
    tar = tar_bytes(bundle)
    ev = report["evaluation"]
    return Int8Figures(
        keras_bytes=model.stat().st_size, float_tflite_bytes=report["size"]["float_bytes"],
        int8_tflite_bytes=report["size"]["quant_bytes"],
        int8_tflite_zstd_bytes=report["size"]["quant_zstd_bytes"],
        bundle_tar_bytes=len(tar), bundle_zstd_bytes=len(bundle_zstd.compress(tar)),
        float_top1=ev.get("float_top1"), int8_top1=ev.get("quant_top1"))
