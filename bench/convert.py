"""What each compression costs and buys: one table per model (issue 14).

::

    .venv/bin/python bench/convert.py [--workdir DIR] [--threads 2] [--markdown]
        [--tradeoff DIR] [--models digits,sensitive,mobilenet]

Models: the digits CNN (``converter.digits``: the held-out 25% of sklearn's digits), the
sensitive model (``tests/converter/sensitive_model.py``: one logit with a -1e4 bias, so
full int8 collapses it) and MobileNetV2 224 (``weights=None``, nothing downloaded).
Rows, every one converted from the same exported SavedModel, on the same LiteRT:

- ``float``: float32 TFLite.
- ``int8``: full int8, calibrated on the representative samples (the profile's int8 IO).
- ``mixed``: the accuracy-budget search of ``edge-convert convert --max-drop 0.5``
  (:mod:`converter.mixedrun`: full int8, int16x8, then ops kept float); MobileNetV2 has
  no labels, so its budget is ``--max-error`` at 3/4 of full int8's relative output error,
  with the per-op probe limited to ``--mnv2-probes`` ops and the search to
  ``--mnv2-candidates`` candidates (a budget missed within them is reported as such).
- ``int4-weights``: ``converter.lowbit.quantize_weights`` (ai-edge-quantizer in its venv).
- ``pruned+int8``: ``converter.prune.prune_model`` (80% sparsity, fine-tuned on the training
  labels; MobileNetV2: 50%, 1 epoch, on the float model's own top-1), then full int8.

A row whose module is not importable says "not available (module missing)"; one whose
tool fails says why. Columns: model file size raw and zstd-compressed (the ``.tar.zst``
codec, :func:`edge_agent.bundle_zstd.compress`), top-1 accuracy on held-out labels
(MobileNetV2: top-1 agreement with float, a pessimistic figure for random weights: its
margins are thin), per-invoke latency p50 (batch 1, the models taking turns invoke by
invoke so load from other processes slows all alike) and conversion time (calibration,
search, quantizer or pruning + fine-tuning included).

MobileNetV2's batch-norm statistics come from 64 images (one training-mode pass, momentum
0) and it outputs logits: untrained statistics fade the signal to ~1e-12 and the float
model would say the same class for every input. Its inputs are digits upscaled to
224×224 RGB in [-1, 1].
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "converter"))  # sensitive_model.py

from converter import mixed, tradeoff  # noqa: E402
from converter.data import Dataset, class_indices, load_dataset  # noqa: E402
from converter.digits import load_split, train_cnn, write_npz  # noqa: E402
from converter.evaluate import latency_ms, run_all  # noqa: E402
from converter.mixed import Budget  # noqa: E402
from converter.mixedrun import choose, measure_fn  # noqa: E402
from converter.quiet import captured_output  # noqa: E402
from edge_agent import bundle_zstd  # noqa: E402
from edge_agent.bundle import Preprocessing  # noqa: E402
from edge_agent.errors import EdgeError  # noqa: E402
from edge_agent.profiles import load_profile  # noqa: E402
from edge_agent.runtime.model import LoadedModel  # noqa: E402

VARIANTS = ("float", "int8", "mixed", "int4-weights", "pruned+int8")
MISSING = "not available (module missing)"


@dataclass(frozen=True)
class Case:
    """One model and how to treat it."""

    title: str
    keras: Path
    calib: Path
    eval: Path
    labelled: bool  # accuracy on eval labels, else agreement with float top-1
    budget: Callable[[float], Budget]  # full int8's relative error → the mixed budget
    train: tuple[np.ndarray, np.ndarray | None]  # pruning data (None: float's own top-1)
    sparsity: float
    epochs: int
    runs: int  # timed invokes per model
    probes: int = mixed.MAX_PROBED_OPS  # mixed search limits (MobileNetV2: smaller)
    candidates: int = mixed.MAX_CANDIDATES


@dataclass
class Row:
    variant: str
    content: bytes | None = None
    score: float | None = None
    p50_ms: float | None = None
    seconds: float | None = None
    note: str = ""
    chosen: bool = False

    @property
    def raw(self) -> int | None:
        return len(self.content) if self.content else None

    @property
    def zstd(self) -> int | None:
        return len(bundle_zstd.compress(self.content)) if self.content else None


@dataclass
class Result:
    case: Case
    rows: list[Row] = field(default_factory=list)


def _timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    t = time.perf_counter()
    with captured_output():
        out = fn()
    return out, time.perf_counter() - t


def _failed(e: Exception) -> str:
    text = str(e).splitlines()[0] if str(e) else type(e).__name__
    return f"not available ({text[:160]})"


def _int4(float_bytes: bytes) -> tuple[bytes | None, float | None, str]:
    try:
        from converter.lowbit import quantize_weights
    except ImportError:
        return None, None, MISSING
    try:
        content, s = _timed(lambda: quantize_weights(float_bytes, "int4-weights",
                                                     timeout_s=900.0))
        return content, s, ""
    except EdgeError as e:  # the row says why (no quantizer venv, a failure, a timeout)
        return None, None, _failed(e)


def _pruned(case: Case, work: Path, rep: Dataset, f_top1: Callable[[np.ndarray], np.ndarray],
            convert_int8: Callable[[Path, Dataset], bytes]) -> tuple[bytes | None,
                                                                     float | None, str]:
    try:
        from converter.prune import prune_model
    except ImportError:
        return None, None, MISSING
    import keras

    x, y = case.train
    labels = y if y is not None else f_top1(x)

    def run() -> bytes:
        model = keras.models.load_model(case.keras)
        pruned, _report = prune_model(model, x, labels, sparsity=case.sparsity,
                                      epochs=case.epochs)
        path = work / f"{case.keras.stem}-pruned.keras"
        pruned.save(path)
        return convert_int8(path, rep)

    try:
        content, s = _timed(run)
        return content, s, f"sparsity {case.sparsity:.0%}, {case.epochs} epoch(s)"
    except EdgeError as e:  # the row says why
        return None, None, _failed(e)


def measure(case: Case, work: Path, threads: int) -> Result:
    from converter.quantize import convert
    from converter.tfload import load_source
    from edge_agent.runtime.backends import select_runtime

    profile = load_profile("generic-x86_64")
    runtime = select_runtime()
    pre = Preprocessing()
    src = load_source(case.keras)
    rep = load_dataset(case.calib, src.inputs, pre)
    ev = load_dataset(case.eval, src.inputs, pre, need_labels=case.labelled)

    def export(path: Path) -> Path:
        s = load_source(path)
        with captured_output():
            return s.export(work / f"{path.stem}-saved")

    def int8(path: Path, data: Dataset) -> bytes:
        out: bytes = convert(export(path), "int8", profile.io_dtype, data.xs)
        return out

    exported = export(case.keras)
    res = Result(case)
    fb, fs = _timed(lambda: convert(exported, "float32", "float32", None))
    res.rows.append(Row("float", fb, seconds=fs))
    fmodel = LoadedModel(runtime, fb, num_threads=threads)
    f_out = run_all(fmodel, ev.xs)[0]

    def f_top1(x: np.ndarray) -> np.ndarray:
        name = next(iter(ev.xs))
        return np.asarray(run_all(fmodel, {name: x})[0].reshape(len(x), -1).argmax(1))

    qb, qs = _timed(lambda: convert(exported, "int8", profile.io_dtype, rep.xs))
    res.rows.append(Row("int8", qb, seconds=qs))
    y = class_indices(ev) if case.labelled else None
    q_out = run_all(LoadedModel(runtime, qb, num_threads=threads), ev.xs)[0]
    budget = case.budget(mixed.score(f_out, q_out, None).rel_error)
    saved = mixed.MAX_PROBED_OPS, mixed.MAX_CANDIDATES
    mixed.MAX_PROBED_OPS, mixed.MAX_CANDIDATES = case.probes, case.candidates
    try:
        chosen, ms = _timed(lambda: choose(exported, rep, ev, f_out, y,
                                           measure_fn(runtime, threads, ev, 0, 0), budget,
                                           profile))
        c = chosen.tried[-1]
        res.rows.append(Row("mixed", chosen.content, seconds=ms, chosen=True,
                            note=f"{budget.flag} {budget.limit:.3g}: {c.label}, "
                                 f"{len(chosen.tried)} candidate(s)"))
    except mixed.BudgetError as e:
        res.rows.append(Row("mixed", note=_failed(e)))
    finally:
        mixed.MAX_PROBED_OPS, mixed.MAX_CANDIDATES = saved
    content, s, note = _int4(fb)
    res.rows.append(Row("int4-weights", content, seconds=s, note=note))
    content, s, note = _pruned(case, work, rep, f_top1, int8)
    res.rows.append(Row("pruned+int8", content, seconds=s, note=note))

    models = {r.variant: LoadedModel(runtime, r.content, num_threads=threads)
              for r in res.rows if r.content}
    ref = f_out.reshape(len(f_out), -1).argmax(1)
    for r in res.rows:
        if r.variant in models:
            top = run_all(models[r.variant], ev.xs)[0]
            top1 = top.reshape(len(top), -1).argmax(1)
            r.score = float(np.mean(top1 == (y if y is not None else ref)))
    lat = latency_ms(models, ev.rows(0, 1), runs=case.runs)
    for r in res.rows:
        if r.variant in lat:
            r.p50_ms = lat[r.variant]["p50"]
    return res


def _upscaled_digits(x: np.ndarray) -> np.ndarray:
    """(N, 8, 8, 1) in [0, 1] → (N, 224, 224, 3) in [-1, 1], bilinear."""
    from PIL import Image

    out = np.empty((len(x), 224, 224, 3), np.float32)
    for i, img in enumerate(x):
        px = Image.fromarray(np.uint8(np.round(img[..., 0] * 255)), "L")
        big = np.asarray(px.resize((224, 224), Image.Resampling.BILINEAR), np.float32)
        out[i] = (big[..., None] / 127.5 - 1.0).repeat(3, axis=-1)
    return out


MODELS = ("digits", "sensitive", "mobilenet")


def cases(work: Path, models: set[str], probes: int, candidates: int) -> list[Case]:
    from sensitive_model import build

    def drop(_: float) -> Budget:
        return Budget(max_drop=0.5)

    split = load_split()
    out = []
    if "digits" in models:
        with captured_output():
            train_cnn(split, work / "digits.keras")
        calib, ev = write_npz(split, work / "digits")
        out.append(Case("digits CNN (8×8×1, sklearn digits)", work / "digits.keras", calib, ev,
                        True, drop, (split.x_train, split.y_train), 0.8, 10, 500))
    if "sensitive" in models:
        sens = work / "sensitive"
        sens.mkdir(exist_ok=True)
        with captured_output():
            model, scal, sev = build(sens)
        strain = np.load(scal)["x"]  # unlabelled: pruned on the float model's own top-1
        out.append(Case("sensitive model (6 dense, one -1e4 logit)", model, scal, sev, True,
                        drop, (strain, None), 0.8, 10, 500))
    if "mobilenet" in models:
        out.append(_mobilenet(work, split, probes, candidates))
    return out


def _mobilenet(work: Path, split: Any, probes: int, candidates: int) -> Case:
    from converter.tfload import import_tf

    tf = import_tf()
    np.savez(work / "mnv2-calib.npz", x=_upscaled_digits(split.x_train[:100]))
    np.savez(work / "mnv2-eval.npz", x=_upscaled_digits(split.x_test[:50]))
    path = work / "mnv2.keras"
    tf.keras.utils.set_random_seed(1)
    with captured_output():
        model = tf.keras.applications.MobileNetV2(weights=None, input_shape=(224, 224, 3),
                                                  classifier_activation=None)
        for layer in model.layers:
            if isinstance(layer, tf.keras.layers.BatchNormalization):
                layer.momentum = 0.0  # moving stats := this batch's stats
        model(_upscaled_digits(split.x_train[100:164]), training=True)
        model.save(path)

    def three_quarters(rel: float) -> Budget:
        return Budget(max_error=0.75 * rel)

    return Case("MobileNetV2 224 (weights=None, BN stats from data, logits)", path,
                work / "mnv2-calib.npz", work / "mnv2-eval.npz", False, three_quarters,
                (_upscaled_digits(split.x_train[:96]), None), 0.5, 1, 50, probes, candidates)


def _kib(n: int | None) -> str:
    if n is None:
        return "–"
    return f"{n / 1024:,.1f} KiB" if n < 2**20 else f"{n / 2**20:,.2f} MiB"


def table(res: Result, markdown: bool) -> str:
    what = "accuracy" if res.case.labelled else "agreement"
    head = ("variant", "size", "zstd", what, "p50 / invoke", "conversion", "note")
    body = [(r.variant + (" (chosen)" if r.chosen else ""), _kib(r.raw), _kib(r.zstd),
             "–" if r.score is None else f"{100 * r.score:.2f}%",
             "–" if r.p50_ms is None else f"{r.p50_ms:.3f} ms",
             "–" if r.seconds is None else f"{r.seconds:.1f} s", r.note) for r in res.rows]
    widths = [max(len(c) for c in col) for col in zip(head, *body, strict=True)]

    def line(cells: tuple[str, ...]) -> str:
        padded = [c.ljust(w) for c, w in zip(cells, widths, strict=True)]
        return ("| " + " | ".join(padded) + " |") if markdown else "  ".join(padded).rstrip()

    sep = ("|" + "|".join("-" * (w + 2) for w in widths) + "|") if markdown else \
        "  ".join("-" * w for w in widths)
    title = f"### {res.case.title}" if markdown else res.case.title
    return "\n".join([title, "", line(head), sep, *(line(b) for b in body)])


def points(res: Result) -> list[dict[str, Any]]:
    """The rows as ``tradeoff.png`` points at their zstd size (what a ``.tar.zst`` ships,
    where pruning pays); the mixed row is the one marked chosen."""
    return [{"label": r.variant, "size_bytes": r.zstd, "accuracy": r.score,
             "latency_ms": r.p50_ms, "chosen": r.chosen} for r in res.rows if r.content]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workdir", type=Path, help="keep models and data here (default: temp)")
    ap.add_argument("--threads", type=int, default=2, help="interpreter threads (default 2)")
    ap.add_argument("--markdown", action="store_true", help="markdown tables")
    ap.add_argument("--tradeoff", type=Path, metavar="DIR",
                    help="write one tradeoff PNG per model here")
    ap.add_argument("--models", default=",".join(MODELS), metavar="LIST",
                    help=f"comma-separated subset of {','.join(MODELS)} (default: all)")
    ap.add_argument("--mnv2-probes", type=int, default=8, metavar="N",
                    help="MobileNetV2: ops measured alone in the mixed search (default 8)")
    ap.add_argument("--mnv2-candidates", type=int, default=12, metavar="N",
                    help="MobileNetV2: candidates the mixed search may try (default 12)")
    a = ap.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import tensorflow as tf

    from edge_agent.runtime.backends import select_runtime

    print(f"bench/convert: {platform.machine()} {_cpu()}, {select_runtime()}, TensorFlow "
          f"{tf.__version__}, {a.threads} thread(s), batch 1, load {_load()} at start",
          flush=True)
    with tempfile.TemporaryDirectory(prefix="bench-convert-") as tmp:
        work = a.workdir or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        chosen = set(a.models.split(","))
        if not chosen <= set(MODELS):
            ap.error(f"--models: unknown {', '.join(sorted(chosen - set(MODELS)))}")
        for case in cases(work, chosen, a.mnv2_probes, a.mnv2_candidates):
            res = measure(case, work, a.threads)  # each table as soon as it is measured
            print(f"\n{table(res, a.markdown)}\n(load {_load()} after it)", flush=True)
            if a.tradeoff is not None:
                a.tradeoff.mkdir(parents=True, exist_ok=True)
                note = tradeoff.write(points(res), a.tradeoff / f"{case.keras.stem}.tradeoff.png",
                                      f"bench/convert: {case.title}", "zstd-compressed size")
                if note:
                    print(note)


def _load() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "unknown"


def _cpu() -> str:
    try:
        for ln in Path("/proc/cpuinfo").read_text().splitlines():
            if ln.startswith("model name"):
                return ln.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


if __name__ == "__main__":
    main()
