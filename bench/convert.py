"""What int8 conversion buys and costs: one table for the digits CNN and MobileNetV2.

::

    .venv/bin/python bench/convert.py [--workdir DIR] [--threads 2] [--markdown]

Per model: float32 vs int8 TFLite size, top-1 accuracy (digits: the held-out 25% of
``sklearn.datasets.load_digits``), top-1 agreement between the float and the int8 model
on the same inputs, and per-invoke latency p50 of both (batch 1, same LiteRT runtime,
same thread count, after warm-up). Everything goes through ``converter.build`` exactly as
``edge-convert convert`` does, with TF/LiteRT chatter captured.

MobileNetV2 is ``weights=None`` (nothing is downloaded), so it has no accuracy, and its
agreement needs care. Untrained, its batch-norm layers hold their initial statistics and
the signal fades to ~1e-12 through 50 layers: the float model outputs the same vector
for every input, so agreement is undefined ("n/a"). The second MobileNetV2 row sets each
batch-norm's statistics from 64 images (one forward pass in training mode, momentum 0)
and outputs logits: its outputs depend on the input, and agreement measures what int8
does to a random-weight network, whose top-1 margins are far thinner than a trained
one's (a pessimistic figure). Inputs are digits upscaled to 224×224 RGB in [-1, 1].
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from converter.build import ConvertOptions, build_bundle  # noqa: E402
from converter.digits import load_split, train_cnn, write_npz  # noqa: E402
from converter.quiet import captured_output  # noqa: E402
from edge_agent.bundle import Preprocessing  # noqa: E402


@dataclass(frozen=True)
class Row:
    model: str
    float_bytes: int
    int8_bytes: int
    float_top1: float | None
    int8_top1: float | None
    agreement: float | None  # None: the float model predicts one class for everything
    p50_float_ms: float
    p50_int8_ms: float
    runtime: str
    threads: int
    seconds: float


def _profile(workdir: Path, threads: int) -> Path:
    """generic-x86_64 with the requested thread count (the bench's only knob)."""
    src = (ROOT / "device_profiles" / "generic-x86_64.toml").read_text()
    cores = max(threads, os.cpu_count() or 1)
    text = src.replace('name = "generic-x86_64"', 'name = "bench"')
    text = text.replace("cores = 2", f"cores = {cores}")
    text = text.replace("default_threads = 2", f"default_threads = {threads}")
    path = workdir / "bench.toml"
    path.write_text(text)
    return path


def _convert(name: str, model: Path, calib: Path, ev: Path, profile: Path, runs: int,
             pre: Preprocessing, samples: int) -> Row:
    t = time.perf_counter()
    with captured_output():
        _, r = build_bundle(ConvertOptions(
            model=model, representative=calib, eval_data=ev, profile=str(profile),
            output=model.parent / f"{model.stem}-bundle", samples=samples,
            latency_runs=runs, preprocessing=pre))
    ev_ = r["evaluation"]
    agreement = ev_["top1_agreement"] if ev_["float_distinct_top1"] > 1 else None
    return Row(name, r["size"]["float_bytes"], r["size"]["quant_bytes"], ev_["float_top1"],
               ev_["quant_top1"], agreement, r["latency_ms"]["float"]["p50"],
               r["latency_ms"]["quant"]["p50"], r["runtime"], r["threads"],
               time.perf_counter() - t)


def _upscaled_digits(x: np.ndarray) -> np.ndarray:
    """(N, 8, 8, 1) in [0, 1] → (N, 224, 224, 3) in [-1, 1], bilinear."""
    from PIL import Image

    out = np.empty((len(x), 224, 224, 3), np.float32)
    for i, img in enumerate(x):
        px = Image.fromarray(np.uint8(np.round(img[..., 0] * 255)), "L")
        big = np.asarray(px.resize((224, 224), Image.Resampling.BILINEAR), np.float32)
        out[i] = (big[..., None] / 127.5 - 1.0).repeat(3, axis=-1)
    return out


def run(workdir: Path, threads: int) -> list[Row]:
    from converter.tfload import import_tf

    profile = _profile(workdir, threads)
    split = load_split()
    with captured_output():
        train_cnn(split, workdir / "digits.keras")
    calib, ev = write_npz(split, workdir)
    rows = [_convert("digits CNN (8×8×1)", workdir / "digits.keras", calib, ev, profile, 500,
                     Preprocessing(), 200)]

    np.savez(workdir / "mnv2-calib.npz", x=_upscaled_digits(split.x_train[:100]))
    np.savez(workdir / "mnv2-eval.npz", x=_upscaled_digits(split.x_test[:200]),
             y=np.zeros(200, np.int64))  # no real classes: accuracy is not reported
    tf = import_tf()
    bn_data = _upscaled_digits(split.x_train[100:164])
    for label, data_bn in (("MobileNetV2 224 (weights=None)", False),
                           ("MobileNetV2 224 (weights=None, BN stats from data, logits)", True)):
        path = workdir / f"mnv2-{'bn' if data_bn else 'plain'}.keras"
        tf.keras.utils.set_random_seed(1)
        with captured_output():
            model = tf.keras.applications.MobileNetV2(
                weights=None, input_shape=(224, 224, 3),
                classifier_activation=None if data_bn else "softmax")
            if data_bn:
                for layer in model.layers:
                    if isinstance(layer, tf.keras.layers.BatchNormalization):
                        layer.momentum = 0.0  # moving stats := this batch's stats
                model(bn_data, training=True)
            model.save(path)
        row = _convert(label, path, workdir / "mnv2-calib.npz", workdir / "mnv2-eval.npz",
                       profile, 50, Preprocessing(mean=(127.5,), std=(127.5,)), 100)
        rows.append(Row(**{**row.__dict__, "float_top1": None, "int8_top1": None}))
    return rows


def _kib(n: int) -> str:
    return f"{n / 1024:,.1f} KiB" if n < 2**20 else f"{n / 2**20:,.2f} MiB"


def _pct(v: float | None, none: str = "–") -> str:
    return none if v is None else f"{100 * v:.2f}%"


def table(rows: list[Row]) -> str:
    head = ("model", "float32 size", "int8 size", "ratio", "float top-1", "int8 top-1",
            "agreement", "p50 float", "p50 int8", "speedup")
    body = [(r.model, _kib(r.float_bytes), _kib(r.int8_bytes),
             f"{r.int8_bytes / r.float_bytes:.3f}", _pct(r.float_top1), _pct(r.int8_top1),
             _pct(r.agreement, "n/a"), f"{r.p50_float_ms:.3f} ms", f"{r.p50_int8_ms:.3f} ms",
             f"×{r.p50_float_ms / r.p50_int8_ms:.2f}") for r in rows]
    widths = [max(len(str(c)) for c in col) for col in zip(head, *body, strict=True)]

    def line(cells: tuple[str, ...]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)) + " |"

    sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(head), sep, *(line(b) for b in body)])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workdir", type=Path, help="keep models and data here (default: temp)")
    ap.add_argument("--threads", type=int, default=2, help="interpreter threads (default 2)")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-convert-") as tmp:
        work = a.workdir or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        rows = run(work, a.threads)
    print(f"bench/convert: {platform.machine()} {_cpu()}, {rows[0].runtime}, "
          f"{rows[0].threads} thread(s), batch 1, p50 of 500 (digits) / 50 (MobileNetV2) "
          "invokes")
    print(table(rows))


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
