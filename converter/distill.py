"""Knowledge distillation for Keras 3 through ``keras.distillation`` (Keras ≥ 3.15 ships it).

A trained teacher's softened outputs teach a smaller student: the loss is
``alpha · L(labels, student) + (1 − alpha) · T² · KL(softmax(t/T) ‖ softmax(s/T))``
(Hinton et al.; ``keras.distillation.Distiller`` with ``LogitsDistillation``, whose KL
term carries the T² factor). Without labels the first term is dropped (``alpha`` = 0),
so unlabelled data teaches from the teacher alone. A class head that ends in a softmax
gives probabilities, not logits: their logarithm is the logits up to a per-sample
constant, which the softmax ignores, so ``log p`` is fed where logits are expected
(exact, not an approximation). A non-class head is distilled by mean squared error on
the outputs (``FeatureDistillation``).

Raises :class:`~converter.errors.ModelSourceError` when the student's input or output
shape is not the teacher's, ``OptionError`` for out-of-range options and
``ConverterEnvironmentError`` when the installed Keras has no ``keras.distillation``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from converter.errors import ConverterEnvironmentError, ModelSourceError, OptionError
from converter.prune import check_epochs

MAX_TEMPERATURE = 100.0
EPS = 1e-7  # probabilities clipped before their log


def check_options(temperature: float, alpha: float, epochs: int) -> None:
    if not (0 < temperature <= MAX_TEMPERATURE):
        raise OptionError(f"--temperature must be > 0 and <= {MAX_TEMPERATURE:g}, "
                          f"got {temperature}")
    if not 0 <= alpha <= 1:
        raise OptionError(f"--alpha (the weight of the label loss) must be between 0 and 1, "
                          f"got {alpha}")
    check_epochs(epochs)


def check_pair(teacher: Any, student: Any, teacher_name: str, student_name: str) -> None:
    """The student takes the teacher's input and gives its output shape."""
    from converter.prunebase import output_shape

    for what, t, s in (("input", teacher.inputs[0].shape[1:], student.inputs[0].shape[1:]),
                       ("output", output_shape(teacher), output_shape(student))):
        if tuple(t) != tuple(s):
            raise ModelSourceError(f"{student_name}: the student's {what} shape {list(s)} does "
                                   f"not match the teacher's {list(t)} ({teacher_name})")


@dataclass(frozen=True)
class DistillReport:
    temperature: float
    alpha: float  # as applied: 0 without labels
    epochs: int
    labelled: bool
    metric: str  # top1 | mae | agreement (no labels to score against)
    teacher: float | None
    student_before: float | None
    student_after: float | None
    agreement_before: float | None  # student top-1 = teacher top-1 (class heads)
    agreement_after: float | None
    evaluated_on: str  # eval | data
    teacher_params: int
    student_params: int
    seconds: float
    stopped_early: bool

    def as_dict(self) -> dict[str, Any]:
        return {k: (round(v, 2) if k == "seconds" else v) for k, v in self.__dict__.items()}


def _keras_distillation() -> Any:
    import keras

    mod = getattr(keras, "distillation", None)
    if mod is None or not hasattr(mod, "Distiller"):
        raise ConverterEnvironmentError(
            f"Keras {keras.__version__} has no keras.distillation; distill needs Keras >= "
            "3.15 (pip install -U keras)")
    return mod


def _loss(kd: Any, keras: Any, classifier: bool, temperature: float,
          teacher_probs: bool, student_probs: bool) -> Any:
    if not classifier:
        return kd.FeatureDistillation(loss="mse")

    def logits(x: Any) -> Any:
        return keras.ops.log(keras.ops.clip(x, EPS, 1.0))

    class Softened(kd.LogitsDistillation):  # type: ignore[misc]
        """LogitsDistillation fed log-probabilities for a model that ends in a softmax."""

        def compute_loss(self, teacher_outputs: Any, student_outputs: Any,
                         **kwargs: Any) -> Any:
            t = logits(teacher_outputs) if teacher_probs else teacher_outputs
            s = logits(student_outputs) if student_probs else student_outputs
            return super().compute_loss(t, s, **kwargs)

    # A KLDivergence *instance*: the default loss="kl_divergence" resolves to the plain
    # function, which LogitsDistillation does not recognise, so it would skip the
    # softmax and the T² factor and take the KL of raw logits clipped to [1e-7, 1]
    # (zero for log-probabilities): no distillation at all (Keras 3.15.1).
    return Softened(temperature=temperature, loss=keras.losses.KLDivergence())


def _agreement(a: np.ndarray, b: np.ndarray) -> float:
    return round(float(np.mean(a.reshape(len(a), -1).argmax(1) == b.reshape(len(b), -1)
                               .argmax(1))), 4)


def distill_model(teacher: Any, student: Any, x: np.ndarray, y: np.ndarray | None = None, *,
                  temperature: float = 4.0, alpha: float = 0.1, epochs: int = 10,
                  x_eval: np.ndarray | None = None, y_eval: np.ndarray | None = None,
                  batch_size: int = 32, learning_rate: float = 1e-3, seed: int = 7,
                  time_limit_s: float | None = 3600.0) -> tuple[Any, DistillReport]:
    """Train ``student`` (in place; returned) from ``teacher`` on ``x`` (and labels ``y``,
    class indices or regression targets, weighted by ``alpha``) for ``epochs``.

    Figures are measured on ``x_eval``/``y_eval`` when given, else on ``x``/``y``;
    without any labels the student is scored by its top-1 agreement with the teacher.
    """
    from converter.prunebase import (
        fit_setup,
        is_classifier,
        outputs_probabilities,
        predict,
        time_limit,
    )
    from converter.prunebase import score as score_fn

    check_options(temperature, alpha, epochs)
    check_pair(teacher, student, "teacher", "student")
    kd = _keras_distillation()
    import keras

    xe, ye, where = (x_eval, y_eval, "eval") if x_eval is not None else (x, y, "data")
    classifier = is_classifier(teacher)
    keras.utils.set_random_seed(seed)
    student_loss, metric = fit_setup(student, x, y)

    def scores(m: Any) -> float | None:
        return None if ye is None else score_fn(m, xe, ye, metric)

    t_out = predict(teacher, xe)
    teacher_score, before = scores(teacher), scores(student)
    agree_before = _agreement(t_out, predict(student, xe)) if classifier else None
    applied = alpha if y is not None else 0.0
    distiller = kd.Distiller(
        teacher=teacher, student=student,
        distillation_losses=_loss(kd, keras, classifier, temperature,
                                  outputs_probabilities(teacher, x),
                                  outputs_probabilities(student, x)),
        student_loss_weight=applied)
    distiller.compile(optimizer=keras.optimizers.Adam(learning_rate), loss=student_loss)
    limit = time_limit(keras, time_limit_s)
    t0 = time.monotonic()
    distiller.fit(x, y, epochs=epochs, batch_size=batch_size, shuffle=True, verbose=0,
                  callbacks=[limit])
    seconds = time.monotonic() - t0
    trained = distiller.student
    return trained, DistillReport(
        temperature=temperature, alpha=applied, epochs=epochs, labelled=y is not None,
        metric=metric if ye is not None else "agreement", teacher=teacher_score,
        student_before=before, student_after=scores(trained), agreement_before=agree_before,
        agreement_after=_agreement(t_out, predict(trained, xe)) if classifier else None,
        evaluated_on=where, teacher_params=int(teacher.count_params()),
        student_params=int(trained.count_params()), seconds=seconds,
        stopped_early=limit.stopped)


def train_alone(student: Any, x: np.ndarray, y: np.ndarray, *, epochs: int,
                batch_size: int = 32, learning_rate: float = 1e-3, seed: int = 7) -> Any:
    """The baseline distillation is measured against: the same student, epochs, seed and
    optimizer, trained on the labels alone."""
    import keras

    from converter.prunebase import fit_setup

    check_epochs(epochs)
    keras.utils.set_random_seed(seed)
    loss, _ = fit_setup(student, x, y)
    student.compile(optimizer=keras.optimizers.Adam(learning_rate), loss=loss)
    student.fit(x, y, epochs=epochs, batch_size=batch_size, shuffle=True, verbose=0)
    return student

