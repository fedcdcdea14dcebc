"""Magnitude pruning for Keras 3 models: a polynomial sparsity schedule during fine-tuning.

What TensorFlow Model Optimization's ``prune_low_magnitude`` does, without it (it needs
tf_keras): every Dense / Conv kernel gets a mask; during fine-tuning on the user's
labelled data a Keras callback raises each kernel's sparsity along Zhu & Gupta's
polynomial schedule (``s_t = s_f + (s_0 - s_f)(1 - t)^3``, TFMOT's ``PolynomialDecay``),
recomputes the mask every few steps from the weights' magnitudes (the smallest ``s_t``
fraction of each kernel is zeroed, so sparsity grows monotonically) and re-applies it
after every optimizer step, so pruned weights stay exactly zero. The last quarter of the
steps holds the final sparsity, letting the remaining weights recover.

The result is the same plain Keras model with zeros in its kernels: no wrapper layer and
no custom objects are needed to load it, and zeros stay zeros through int8 quantization
(symmetric weight scales, zero-point 0), which is what the zstd bundle compresses.

The schedule and the masks are pure (numpy); :func:`prune_model` is the Keras shell.
Raises :class:`~converter.errors.OptionError` for out-of-range options.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from converter.errors import OptionError

MIN_SPARSITY, MAX_SPARSITY = 0.5, 0.9
MAX_EPOCHS = 1000
HOLD_FRACTION = 0.25  # of the fine-tuning steps, at the final sparsity
MASK_UPDATES = 16  # mask recomputations along the ramp
POWER = 3.0
PRUNABLE = frozenset({"Dense", "Conv1D", "Conv2D", "Conv3D", "DepthwiseConv2D",
                      "Conv1DTranspose", "Conv2DTranspose", "Conv3DTranspose",
                      "SeparableConv1D", "SeparableConv2D", "EinsumDense"})


def check_sparsity(sparsity: float) -> None:
    if not (isinstance(sparsity, (int, float)) and MIN_SPARSITY <= sparsity <= MAX_SPARSITY):
        raise OptionError(f"--sparsity must be between {MIN_SPARSITY} and {MAX_SPARSITY} "
                          f"(the fraction of kernel weights set to zero), got {sparsity}")


def check_epochs(epochs: int) -> None:
    if not 1 <= epochs <= MAX_EPOCHS:
        raise OptionError(f"--epochs must be between 1 and {MAX_EPOCHS}, got {epochs}")


@dataclass(frozen=True)
class Schedule:
    """Polynomial decay of density from ``initial`` to ``final`` sparsity over
    ``begin_step..end_step``, the mask recomputed every ``frequency`` steps."""

    final: float
    end_step: int
    frequency: int
    begin_step: int = 0
    initial: float = 0.0
    power: float = POWER

    @classmethod
    def for_steps(cls, final: float, total_steps: int) -> Schedule:
        end = max(1, math.floor(total_steps * (1 - HOLD_FRACTION)))
        return cls(final=final, end_step=end, frequency=max(1, end // MASK_UPDATES))

    def sparsity(self, step: int) -> float:
        t = min(1.0, max(0.0, (step - self.begin_step) / max(1, self.end_step - self.begin_step)))
        return float(self.final + (self.initial - self.final) * (1.0 - t) ** self.power)

    def updates_at(self, step: int) -> bool:
        return (self.begin_step <= step <= self.end_step
                and ((step - self.begin_step) % self.frequency == 0 or step == self.end_step))


def magnitude_mask(w: np.ndarray, sparsity: float) -> np.ndarray:
    """1 for the weights kept, 0 for the ``round(sparsity · size)`` smallest by magnitude
    (exactly that many, ties broken by position)."""
    k = round(sparsity * w.size)
    mask = np.ones(w.size, dtype=w.dtype)
    if k > 0:
        mask[np.argpartition(np.abs(w).ravel(), k - 1)[:k]] = 0
    return mask.reshape(w.shape)


@dataclass(frozen=True)
class LayerSparsity:
    layer: str
    weights: int  # kernel weights
    zeros: int

    @property
    def sparsity(self) -> float:
        return self.zeros / self.weights if self.weights else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {"layer": self.layer, "weights": self.weights, "zeros": self.zeros,
                "sparsity": round(self.sparsity, 4)}


@dataclass(frozen=True)
class PruneReport:
    target_sparsity: float
    epochs: int
    steps: int
    layers: tuple[LayerSparsity, ...]
    metric: str  # top1 (classification) | mae (regression)
    before: float | None  # metric on the eval data (or the training data) before pruning
    after: float | None
    eval_source: str  # "eval" | "train"
    seconds: float
    stopped_early: bool  # the time limit stopped fine-tuning; masks applied at once

    @property
    def sparsity(self) -> float:
        """Zeros over all pruned kernel weights."""
        n = sum(x.weights for x in self.layers)
        return sum(x.zeros for x in self.layers) / n if n else 0.0

    def as_dict(self) -> dict[str, Any]:
        drop = (None if self.before is None or self.after is None or self.metric != "top1"
                else round(100 * (self.before - self.after), 3))
        return {"target_sparsity": self.target_sparsity, "sparsity": round(self.sparsity, 4),
                "epochs": self.epochs, "steps": self.steps, "metric": self.metric,
                "before": self.before, "after": self.after, "drop_points": drop,
                "evaluated_on": self.eval_source, "seconds": round(self.seconds, 2),
                "stopped_early": self.stopped_early,
                "layers": [x.as_dict() for x in self.layers]}


def prunable_kernels(model: Any) -> Iterator[tuple[str, Any]]:
    """``(layer path, kernel variable)`` of every Dense / Conv layer, nested models too."""
    seen: set[int] = set()

    def walk(layer: Any) -> Iterator[tuple[str, Any]]:
        if id(layer) in seen:
            return
        seen.add(id(layer))
        if type(layer).__name__ in PRUNABLE:
            for v in layer.trainable_weights:
                if v.path.rsplit("/", 1)[-1].endswith("kernel"):
                    yield v.path, v
        for sub in getattr(layer, "layers", ()) or ():
            yield from walk(sub)

    for layer in model.layers:
        yield from walk(layer)


def sparsity_of(model: Any) -> tuple[LayerSparsity, ...]:
    out = []
    for path, v in prunable_kernels(model):
        w = np.asarray(v.numpy())
        out.append(LayerSparsity(path.rsplit("/", 1)[0], int(w.size), int(np.sum(w == 0))))
    return tuple(out)


def _pruner(keras: Any, kernels: list[tuple[str, Any]], schedule: Schedule) -> Any:
    """The callback that keeps the masks (built lazily: keras is imported by the caller)."""

    class Pruner(keras.callbacks.Callback):  # type: ignore[misc]
        def __init__(self) -> None:
            super().__init__()
            self.step = 0
            self.masks: list[Any] = [None] * len(kernels)

        def update(self, sparsity: float) -> None:
            for i, (_, v) in enumerate(kernels):
                self.masks[i] = keras.ops.convert_to_tensor(
                    magnitude_mask(np.asarray(v.numpy()), sparsity))

        def apply(self) -> None:
            for (_, v), m in zip(kernels, self.masks, strict=True):
                if m is not None:
                    v.assign(keras.ops.multiply(v, m))

        def on_train_batch_end(self, batch: int, logs: Any = None) -> None:
            self.step += 1
            if schedule.updates_at(self.step):
                self.update(schedule.sparsity(self.step))
            self.apply()

        def finish(self) -> None:
            """The final sparsity, whatever the schedule reached (a short run, a stop)."""
            self.update(schedule.final)
            self.apply()

    return Pruner()


def prune_model(model: Any, x: np.ndarray, y: np.ndarray, *, sparsity: float, epochs: int,
                x_eval: np.ndarray | None = None, y_eval: np.ndarray | None = None,
                batch_size: int = 32, learning_rate: float = 1e-3, seed: int = 7,
                time_limit_s: float | None = 3600.0) -> tuple[Any, PruneReport]:
    """Prune ``model`` (modified in place and returned) to ``sparsity`` while fine-tuning
    it on ``x``/``y`` for ``epochs``; the report's metric is measured on ``x_eval`` /
    ``y_eval`` when given, else on ``x``/``y``.

    ``y``: class indices for a class head (sparse cross-entropy; probabilities or logits,
    told from the model's own outputs), else regression targets (mean squared error).
    ``time_limit_s`` bounds fine-tuning: past it training stops, the final masks are
    applied at once and the report says ``stopped_early``.
    Raises OptionError for a sparsity outside 0.5..0.9, epochs outside 1..1000 or a
    model with nothing to prune.
    """
    from converter.prunebase import fit_setup, score, time_limit

    check_sparsity(sparsity)
    check_epochs(epochs)
    import keras

    kernels = list(prunable_kernels(model))
    if not kernels:
        raise OptionError("the model has no Dense or Conv kernels to prune")
    if (x_eval is None) != (y_eval is None):
        raise OptionError("give both x_eval and y_eval, or neither")
    xe, ye, where = ((x_eval, y_eval, "eval") if x_eval is not None and y_eval is not None
                     else (x, y, "train"))
    keras.utils.set_random_seed(seed)
    loss, metric = fit_setup(model, x, y)
    before = score(model, xe, ye, metric)
    steps = epochs * math.ceil(len(x) / batch_size)
    t0 = time.monotonic()
    pruner = _pruner(keras, kernels, Schedule.for_steps(sparsity, steps))
    limit = time_limit(keras, time_limit_s)
    model.compile(optimizer=keras.optimizers.Adam(learning_rate), loss=loss)
    model.fit(x, y, epochs=epochs, batch_size=batch_size, shuffle=True, verbose=0,
              callbacks=[pruner, limit])
    pruner.finish()
    seconds = time.monotonic() - t0
    after = score(model, xe, ye, metric)
    return model, PruneReport(target_sparsity=sparsity, epochs=epochs, steps=pruner.step,
                              layers=sparsity_of(model), metric=metric, before=before,
                              after=after, eval_source=where, seconds=seconds,
                              stopped_early=limit.stopped)
