"""Orchestrate one conversion: load → convert float & quantized → evaluate → bundle.

The bundle is built in memory and written atomically at the very end, so a failure at
any step leaves nothing at the output path.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

import converter
from converter.data import Dataset, load_dataset
from converter.errors import DatasetError, OutputError
from converter.evaluate import compare, latency_ms, run_model
from converter.quantize import convert, list_ops
from converter.support import op_support
from converter.tfload import import_tf, load_source
from edge_agent.bundle import (
    Bundle,
    DriftReference,
    EncodedArray,
    GoldenVector,
    Manifest,
    Preprocessing,
    sha256_bytes,
    write_bundle,
)
from edge_agent.profiles import DeviceProfile, load_profile
from edge_agent.runtime.backends import select_runtime
from edge_agent.runtime.model import LoadedModel
from edge_agent.runtime.quant import coerce_input

CONFIDENCE_EDGES = tuple(round(x, 2) for x in np.linspace(0.0, 1.0, 11))
GOLDEN_COUNT = 4


@dataclass
class ConvertOptions:
    model: Path
    representative: Path
    profile: str
    output: Path
    eval_data: Path | None = None
    labels_file: Path | None = None
    mode: str = "int8"
    io_dtype: str | None = None  # default: the profile's
    samples: int = 200
    name: str | None = None
    version: int = 1
    preprocessing: Preprocessing = field(default_factory=Preprocessing)
    golden_atol: float = 2.0  # quantized steps: runtimes may round differently by a step
    latency_runs: int = 50


class Steps:
    """Progress callbacks; the CLI plugs a rich progress bar in here."""

    def stage(self, name: str) -> None: ...
    def start(self, name: str, total: int) -> Callable[[int], None]:
        return lambda n: None


def _softmax(x: np.ndarray) -> np.ndarray:
    z = x - x.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def _is_probability(out: np.ndarray) -> bool:
    flat = out.reshape(len(out), -1)
    return bool(np.all(flat >= -1e-3) and np.allclose(flat.sum(1), 1.0, atol=2e-2))


def _check_output_path(out: Path) -> None:
    parent = out.parent if out.parent != Path("") else Path(".")
    if out.exists() and not out.is_dir() and out.suffix != ".tar":
        raise OutputError(f"{out}: exists and is not a bundle directory or .tar")
    probe = parent
    while not probe.exists():
        probe = probe.parent
    if not os.access(probe, os.W_OK) or not probe.is_dir():
        raise OutputError(f"{out}: cannot write here ({probe} is not a writable directory)")


def _load_labels(opts: ConvertOptions, *datasets: Dataset | None) -> tuple[str, ...]:
    if opts.labels_file:
        try:
            text = opts.labels_file.read_text(encoding="utf-8")
        except OSError as e:
            raise DatasetError(f"{opts.labels_file}: cannot read labels ({e.strerror})") from e
        labels = tuple(ln.strip() for ln in text.splitlines() if ln.strip())
        if not labels:
            raise DatasetError(f"{opts.labels_file}: labels file is empty")
        return labels
    for d in datasets:
        if d is not None and d.labels:
            return d.labels
    return ()


def build_bundle(opts: ConvertOptions, steps: Steps | None = None) -> tuple[Bundle, dict[str, Any]]:
    """Run the conversion and return the bundle (not yet written) and the report."""
    steps = steps or Steps()
    profile: DeviceProfile = load_profile(opts.profile)
    _check_output_path(opts.output)
    io_dtype = opts.io_dtype or profile.io_dtype
    if profile.requires_full_integer and opts.mode != "int8":
        raise OutputError(f"profile {profile.name} ({profile.delegate}) runs only full-integer "
                          f"models; --mode {opts.mode} would not run on its accelerator")
    steps.stage("loading model")
    src = load_source(opts.model)
    shape = src.input_shape
    pre = opts.preprocessing
    if pre.resize is None and len(shape) == 3:
        pre = replace(pre, resize=(shape[0], shape[1]))
        if shape[2] == 1:
            pre = replace(pre, color="grayscale")
    steps.stage("loading data")
    rep = load_dataset(opts.representative, shape, pre, samples=opts.samples)
    ev = (load_dataset(opts.eval_data, shape, pre, need_labels=True)
          if opts.eval_data else None)
    labels = _load_labels(opts, ev, rep)

    tf = import_tf()
    tick = steps.start("converting", 2)
    float_bytes = convert(src, "float32", "float32", None)
    tick(1)
    quant_bytes = convert(src, opts.mode, io_dtype, rep.x)
    tick(1)

    runtime = select_runtime()
    threads = min(profile.default_threads, os.cpu_count() or 1)
    fmodel = LoadedModel(runtime, float_bytes, num_threads=threads)
    qmodel = LoadedModel(runtime, quant_bytes, num_threads=threads)
    out_classes = int(np.prod(qmodel.output_specs[0].shape[1:]))
    if labels and len(labels) != out_classes:
        raise DatasetError(f"{len(labels)} labels given but the model outputs {out_classes} "
                           "values")

    data = ev if ev is not None else rep
    tick = steps.start("evaluating", 2 * len(data.x))
    f_out = run_model(fmodel, data.x, tick)
    q_out = run_model(qmodel, data.x, tick)
    is_prob = _is_probability(f_out)
    comp = compare(f_out, q_out, data.y, labels or tuple(str(i) for i in range(out_classes)))

    steps.stage("measuring latency")
    lat_f = latency_ms(fmodel, data.x[0], runs=opts.latency_runs)
    lat_q = latency_ms(qmodel, data.x[0], runs=opts.latency_runs)

    # Golden vectors: a few real samples, their raw input tensors and raw outputs.
    golden = []
    for i in np.linspace(0, len(data.x) - 1, min(GOLDEN_COUNT, len(data.x))).astype(int):
        raw_in = coerce_input(data.x[i:i + 1], qmodel.input_spec)
        raw_out = qmodel.invoke_raw(raw_in)[0]
        atol = opts.golden_atol if qmodel.output_specs[0].quantized else 1e-4
        golden.append(GoldenVector(EncodedArray.encode(raw_in), EncodedArray.encode(raw_out),
                                   atol))

    # Drift reference from the quantized model on calibration data (what the device sees).
    q_rep = q_out if ev is None else run_model(qmodel, rep.x)
    probs = q_rep.reshape(len(q_rep), -1)
    probs = probs if is_prob else _softmax(probs)
    cls_hist = np.bincount(probs.argmax(1), minlength=out_classes) / len(probs)
    conf_hist, _ = np.histogram(probs.max(1), bins=np.asarray(CONFIDENCE_EDGES))
    axes = tuple(range(rep.x.ndim - 1))
    drift = DriftReference(
        samples=len(probs),
        class_hist=tuple(round(float(v), 6) for v in cls_hist),
        confidence_edges=CONFIDENCE_EDGES,
        confidence_hist=tuple(round(float(v), 6) for v in conf_hist / max(1, conf_hist.sum())),
        input_mean=tuple(round(float(v), 6) for v in np.atleast_1d(rep.x.mean(axis=axes))),
        input_std=tuple(round(float(v), 6) for v in np.atleast_1d(rep.x.std(axis=axes))),
    )

    ops = list_ops(quant_bytes)
    support = op_support(ops, profile)
    name = opts.name or opts.model.stem
    manifest = Manifest(
        name=name,
        version=opts.version,
        created_at=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        model_sha256=sha256_bytes(quant_bytes),
        model_size=len(quant_bytes),
        inputs=(qmodel.input_spec,),
        outputs=qmodel.output_specs,
        preprocessing=pre,
        quantization_mode=opts.mode,
        task="classification" if out_classes > 1 else "raw",
        output_is_probability=is_prob,
        labels=labels,
        target_profiles=(profile.name,),
        golden=tuple(golden),
        drift_reference=drift,
        converter_version=converter.__version__,
        tensorflow_version=tf.__version__,
    )
    report: dict[str, Any] = {
        "name": name, "version": opts.version, "profile": profile.name,
        "mode": opts.mode, "io_dtype": io_dtype, "source": str(opts.model),
        "runtime": str(runtime), "threads": threads,
        "size": {"float_bytes": len(float_bytes), "quant_bytes": len(quant_bytes),
                 "ratio": round(len(quant_bytes) / len(float_bytes), 4)},
        "evaluation": {"data": data.source, "labelled": data.y is not None, **comp.as_dict()},
        "latency_ms": {"float": lat_f, "quant": lat_q,
                       "speedup": round(lat_f["mean"] / max(lat_q["mean"], 1e-9), 3)},
        "ops": support,
        "unsupported_on_delegate": [r["op"] for r in support if not r["delegate"]],
        "memory": {"budget_mb": profile.memory_budget_mb,
                   "model_mb": round(len(quant_bytes) / 2**20, 3),
                   "fits": len(quant_bytes) / 2**20 < profile.memory_budget_mb / 4},
    }
    return Bundle(manifest, quant_bytes, report, str(opts.output)), report


def convert_to_bundle(opts: ConvertOptions, steps: Steps | None = None) -> dict[str, Any]:
    """Build and write the bundle atomically; returns the report."""
    bundle, report = build_bundle(opts, steps)
    try:
        write_bundle(bundle, opts.output)
    except OSError as e:
        raise OutputError(f"{opts.output}: cannot write bundle ({e.strerror or e})") from e
    return report
