"""Orchestrate one conversion: check → load → convert float & quantized → evaluate → bundle.

Cheap checks (profile, options, paths) run before TensorFlow is imported, so most bad
input fails in well under a second. The bundle is built in memory and written
atomically at the very end, so a failure at any step leaves nothing at the output path.

Raises the :mod:`converter.errors` tree, ``ProfileError``, ``ModelLoadError`` and
``RuntimeUnavailableError``.
"""

from __future__ import annotations

import datetime as dt
import math
import os
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

import converter
from converter import dettask, lowbit, tradeoff
from converter.data import Dataset, check_data_path, class_indices, load_dataset, read_labels
from converter.errors import DatasetError, OptionError, OutputError
from converter.evaluate import compare, latency_ms, run_all
from converter.floatops import explain
from converter.goldens import drift_reference, golden_vectors, is_probability
from converter.graph import inspect_graph
from converter.imageinput import check_normalisation, image_preprocessing
from converter.mixed import Budget
from converter.mixedrun import Chosen, choose, measure_fn, tradeoff_points
from converter.modes import (
    BUNDLE_MODES,
    CALIBRATED_MODES,
    INT8_MODES,
    LOWBIT_MODES,
    REFERENCE_MODE,
    resolve,
)
from converter.options import BundleOptions
from converter.quantize import convert
from converter.report import build_warnings
from converter.support import delegate_summary, memory_check, op_support
from converter.tfload import SourceInput, check_model_path, import_tf, load_source
from edge_agent import bundle_zstd
from edge_agent.bundle import (
    BUNDLE_FILES,
    Bundle,
    Manifest,
    Preprocessing,
    is_tar_path,
    sha256_bytes,
    write_bundle,
)
from edge_agent.manifest import TensorSpec, oldest_schema
from edge_agent.profiles import DeviceProfile, load_profile
from edge_agent.runtime.backends import select_runtime
from edge_agent.runtime.model import LoadedModel

MODES = BUNDLE_MODES  # one definition: converter.quantize
IO_DTYPES = ("int8", "uint8", "float32")
TASKS = ("classification", "regression", "multi_output", "detection", "raw")  # manifest TASKS


@dataclass(frozen=True, kw_only=True)
class ConvertOptions(BundleOptions):
    representative: Path
    profile: str
    eval_data: Path | None = None
    mode: str = "int8"
    allow_float_ops: bool = False  # with int8: ops without int8 kernels stay float
    io_dtype: str | None = None  # default: the profile's
    name: str | None = None  # default: the model file's stem
    version: int = 1
    trust_model: bool = False  # let Keras deserialize Python lambdas
    max_drop: float | None = None  # --max-drop: accuracy points below float (mixed search)
    max_error: float | None = None  # --max-error: relative output error budget


class Steps:
    """Progress callbacks; the CLI plugs a rich progress bar in here."""

    def stage(self, name: str) -> None: ...
    def start(self, name: str, total: int) -> Callable[[int], None]:
        return lambda n: None


def preflight(opts: ConvertOptions) -> DeviceProfile:
    """Every check that needs no TensorFlow: options, profile, model/data/output paths."""
    if opts.mode not in MODES:
        raise OptionError(f"--mode must be one of {', '.join(MODES)}, got {opts.mode!r}")
    if opts.io_dtype is not None and opts.io_dtype not in IO_DTYPES:
        raise OptionError(f"--io-dtype must be one of {', '.join(IO_DTYPES)}, "
                          f"got {opts.io_dtype!r}")
    if opts.task is not None and opts.task not in TASKS:
        raise OptionError(f"--task must be one of {', '.join(TASKS)}, got {opts.task!r}")
    if opts.heads and opts.task != "detection":
        raise OptionError("--heads applies to --task detection only")
    if opts.version < 1:
        raise OptionError(f"--version must be a positive integer, got {opts.version}")
    if opts.samples < 1:
        raise OptionError(f"--samples must be >= 1, got {opts.samples}")
    if opts.latency_runs < 0:
        raise OptionError(f"--latency-runs must be >= 0, got {opts.latency_runs}")
    check_normalisation(opts.preprocessing)
    profile = load_profile(opts.profile)
    if opts.allow_float_ops and opts.mode != "int8":
        raise OptionError(f"--allow-float-ops applies to --mode int8 only, got --mode "
                          f"{opts.mode}")
    if profile.requires_full_integer and opts.mode != "int8":
        raise OptionError(f"profile {profile.name} ({profile.delegate}) runs only full-integer "
                          f"models; --mode {opts.mode} would not run on its accelerator")
    if profile.requires_full_integer and opts.allow_float_ops:
        raise OptionError(f"profile {profile.name} ({profile.delegate}) runs only full-integer "
                          "models; --allow-float-ops would leave float ops its accelerator "
                          "cannot run")
    if profile.requires_full_integer and (opts.io_dtype or profile.io_dtype) == "float32":
        raise OptionError(f"profile {profile.name} ({profile.delegate}) needs integer model "
                          "input and output; drop --io-dtype float32")
    check_budget(opts)
    if opts.mode in LOWBIT_MODES:  # the quantizer's venv; a profile runtime that runs it
        lowbit.preflight(profile, opts.mode, opts.io_dtype)
    check_output_path(opts.output)
    check_model_path(opts.model)
    check_data_path(opts.representative)
    if opts.eval_data is not None:
        check_data_path(opts.eval_data, need_labels=True)
    if opts.labels_file is not None and not opts.labels_file.is_file():
        raise DatasetError(f"{opts.labels_file}: no such labels file")
    return profile


def check_budget(opts: ConvertOptions) -> None:
    """``--max-drop`` / ``--max-error``: one of them, >= 0, with ``--eval``, full int8."""
    if opts.max_drop is None and opts.max_error is None:
        return
    if opts.max_drop is not None and opts.max_error is not None:
        raise OptionError("give --max-drop (accuracy points) or --max-error (relative output "
                          "error), not both")
    flag, v = (("--max-drop", opts.max_drop) if opts.max_drop is not None
               else ("--max-error", opts.max_error))
    if v is None or not v >= 0 or math.isinf(v):
        raise OptionError(f"{flag} must be a finite number >= 0, got {v}")
    if opts.eval_data is None:
        raise OptionError(f"{flag} needs --eval DATA: the budget is measured on held-out data")
    if opts.mode != "int8" or opts.allow_float_ops:
        raise OptionError(f"{flag} starts from full int8 and keeps ops float itself; drop "
                          f"--mode {opts.mode}"
                          + (" --allow-float-ops" if opts.allow_float_ops else ""))


def check_output_path(out: Path) -> None:
    """Refuse an output we could not write, or one whose replacement would destroy data.

    Probes the nearest existing ancestor by creating (and removing) a temp file there,
    which also works for root and read-only mounts, where ``os.access`` lies.
    """
    if out.exists():
        if is_tar_path(out) and not out.is_file():
            raise OutputError(f"{out}: exists and is not a file")
        if not is_tar_path(out) and not out.is_dir():
            raise OutputError(f"{out}: exists and is not a bundle directory or .tar")
        if out.is_dir():
            foreign = sorted(p.name for p in out.iterdir()
                             if p.name not in (*BUNDLE_FILES, tradeoff.FILE))
            if foreign:
                raise OutputError(f"{out}: exists and holds files that are not a bundle "
                                  f"({', '.join(foreign[:3])}); refusing to replace it")
    probe = out.parent if str(out.parent) else Path(".")
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir():
        raise OutputError(f"{out}: cannot write here ({probe} is not a directory)")
    try:
        fd, name = tempfile.mkstemp(dir=probe, prefix=".edge-convert-probe-")
    except OSError as e:
        raise OutputError(f"{out}: cannot write here ({probe}: {e.strerror})") from e
    os.close(fd)
    os.unlink(name)


def _preprocessing(opts: ConvertOptions, inputs: Sequence[SourceInput | TensorSpec]
                   ) -> Preprocessing:
    """The options' preprocessing completed for the model's image input
    (:func:`converter.imageinput.image_preprocessing`)."""
    specs = [s if isinstance(s, TensorSpec) else TensorSpec(s.name, (1, *s.shape), s.dtype)
             for s in inputs]
    return image_preprocessing(specs, opts.preprocessing, color=opts.color,
                               image_input=opts.image_input)


def _labels(opts: ConvertOptions, out_classes: int, ev: Dataset | None,
            rep: Dataset, head: str = "") -> tuple[tuple[str, ...], Dataset | None]:
    """The model's class names, and ``ev`` with folder class indices mapped onto them.

    Folder datasets number their classes by sorted folder name; when a folder holds only
    some classes, those numbers are not the model's output indices, so they are mapped
    by name through the labels (``--labels`` or a .npz ``labels`` array).
    """
    labels: tuple[str, ...] = ()
    if opts.labels_file:
        labels = read_labels(opts.labels_file)
    else:
        for d in (ev, rep):
            if d is not None and d.kind == "npz" and d.labels:
                labels = d.labels
                break
        else:
            for d in (ev, rep):
                if d is not None and d.kind == "folder" and len(d.labels) == out_classes:
                    labels = d.labels
                    break
    if labels and len(labels) != out_classes:
        where = f"{opts.labels_file}: " if opts.labels_file else ""
        what = f"its class head {head!r} has" if head else "the model outputs"
        raise DatasetError(f"{where}{len(labels)} labels given but {what} {out_classes} "
                           "values")
    if ev is not None and ev.kind == "folder" and ev.y is not None:
        if not labels:
            raise DatasetError(f"{ev.source}: {len(ev.labels)} class folders but the model "
                               f"outputs {out_classes} classes; pass --labels FILE to map "
                               "folder names to outputs")
        missing = [c for c in ev.labels if c not in labels]
        if missing:
            raise DatasetError(f"{ev.source}: class folder(s) {', '.join(missing[:5])} are not "
                               "among the model's labels")
        index = np.asarray([labels.index(c) for c in ev.labels], dtype=np.int64)
        ev = replace(ev, y=index[ev.y])
    y = class_indices(ev) if ev is not None and out_classes else None
    if ev is not None and y is not None and len(y) and int(y.max()) >= out_classes:
        raise DatasetError(f"{ev.source}: class index {int(y.max())} but the model "
                           f"outputs only {out_classes} classes")
    return labels, ev


def _heads(model: LoadedModel, f_outs: list[np.ndarray]) -> dict[str, str]:
    """What each output is. One output: a class head when it has several values (today's
    rule), else raw. Several: the one output whose float values are probabilities (>= 0,
    summing to 1 per sample) is the class head; the others are regression heads."""
    specs = model.output_specs
    if len(specs) == 1:
        return {specs[0].name: "class" if math.prod(specs[0].shape[1:]) > 1 else "raw"}
    probs = [s.name for s, o in zip(specs, f_outs, strict=True)
             if math.prod(s.shape[1:]) > 1 and is_probability(o)]
    head = probs[0] if len(probs) == 1 else None
    return {s.name: "class" if s.name == head else "regression" for s in specs}


def _is_target(y: np.ndarray | None) -> bool:
    """``y`` that holds regression targets: floats that are not all whole numbers (class
    indices and one-hot rows are whole)."""
    return y is not None and y.dtype.kind == "f" and not bool(np.all(y == np.round(y)))


def _task_heads(task: str | None, model: LoadedModel, f_outs: list[np.ndarray],
                y: np.ndarray | None, overrides: dict[str, str] | None = None
                ) -> tuple[str, dict[str, str]]:
    """The bundle's task and what each output is: ``--task`` when given, else inferred
    (a single output that is not a probability vector, with float targets ``y``, is a
    regression head; otherwise :func:`_heads`; detection: :mod:`converter.dettask`, with
    the ``--heads`` ``overrides``). Raises OptionError when the outputs cannot be what
    ``--task`` says."""
    specs = model.output_specs
    if task == "detection":
        return task, dettask.detection_heads(specs, overrides or {})
    inferred = _heads(model, f_outs)
    single = len(specs) == 1
    if task is None:
        if single and not is_probability(f_outs[0]) and _is_target(y):
            task = "regression"
        elif single:
            task = "classification" if inferred[specs[0].name] == "class" else "raw"
        else:
            task = "multi_output"
    names = ", ".join(f"{s.name} {list(s.shape)}" for s in specs)
    if task == "regression":
        return task, {s.name: "regression" for s in specs}
    if task == "raw":
        return task, {s.name: "raw" for s in specs}
    if task == "multi_output" and single:
        raise OptionError(f"--task multi_output needs several outputs, the model has one "
                          f"({names})")
    if task == "classification" and "class" not in inferred.values():
        raise OptionError("--task classification needs a class head (one output of several "
                          "values, or exactly one probability output among several); the "
                          f"model's outputs: {names}")
    return task, inferred
def _regression(f: np.ndarray, q: np.ndarray) -> dict[str, float | None]:
    """MAE, RMSE and Pearson correlation of ``q`` against the reference ``f`` (the float
    head, or the targets ``y``)."""
    a, b = f.astype(np.float64).ravel(), q.astype(np.float64).ravel()
    d = b - a
    corr = (float(np.corrcoef(a, b)[0, 1]) if a.size > 1 and a.std() > 0 and b.std() > 0
            else None)
    return {"mae": round(float(np.abs(d).mean()), 6),
            "rmse": round(float(np.sqrt((d ** 2).mean())), 6),
            "correlation": None if corr is None else round(corr, 6)}


def _targets(y: np.ndarray | None, name: str, out: np.ndarray, source: str
             ) -> np.ndarray | None:
    """``y`` as the regression head ``name``'s values, one row per sample. Raises
    DatasetError when it holds a different number of values per sample."""
    if y is None:
        return None
    t = y.reshape(len(y), -1).astype(np.float64)
    want = int(np.prod(out.shape[1:]))
    if t.shape[1] != want:
        raise DatasetError(f"{source}: 'y' has {t.shape[1]} value(s) per sample but the "
                           f"regression head {name!r} has {want}")
    return t


def _head_report(heads: dict[str, str], f_outs: list[np.ndarray], q_outs: list[np.ndarray],
                 y_class: np.ndarray | None, labels: tuple[str, ...],
                 targets: dict[str, np.ndarray]) -> dict[str, Any]:
    """Each head scored with a metric that fits it; max/mean abs diff for every output.
    A regression head with targets (``y`` of a regression task) is also scored against
    them: MAE/RMSE/correlation of the float and the quantized model."""
    out: dict[str, Any] = {}
    for (name, kind), f, q in zip(heads.items(), f_outs, q_outs, strict=True):
        diff = np.abs(f.astype(np.float64) - q.astype(np.float64))
        row: dict[str, Any] = {"kind": kind, "max_abs_diff": round(float(diff.max()), 6),
                               "mean_abs_diff": round(float(diff.mean()), 6)}
        if kind == "class":
            c = compare(f, q, y_class, labels)
            row.update(top1_agreement=c.agreement, float_top1=c.float_accuracy,
                       quant_top1=c.quant_accuracy)
        elif kind == "regression":
            row.update(_regression(f, q))
            t = targets.get(name)
            if t is not None:
                row["target"] = {"float": _regression(t, f.reshape(len(f), -1)),
                                 "quant": _regression(t, q.reshape(len(q), -1))}
        out[name] = row
    return out


def build_bundle(opts: ConvertOptions, steps: Steps | None = None) -> tuple[Bundle, dict[str, Any]]:
    """Run the conversion and return the bundle (not yet written) and the report."""
    steps = steps or Steps()
    profile = preflight(opts)
    io_dtype = opts.io_dtype or profile.io_dtype
    mode = resolve(opts.mode, opts.allow_float_ops)
    steps.stage("loading model")
    src = load_source(opts.model, trust=opts.trust_model)
    pre = _preprocessing(opts, src.inputs)
    steps.stage("loading data")
    rep = load_dataset(opts.representative, src.inputs, pre, samples=opts.samples)
    ev = (load_dataset(opts.eval_data, src.inputs, pre, need_labels=True)
          if opts.eval_data else None)

    tf = import_tf()
    with tempfile.TemporaryDirectory(prefix="edge-convert-") as work:
        steps.stage("exporting graph")
        exported = src.export(Path(work))
        steps.stage("converting float32")
        float_bytes = convert(exported, REFERENCE_MODE, "float32", None)
        runtime = select_runtime()
        threads = min(profile.default_threads, os.cpu_count() or 1)
        fmodel = LoadedModel(runtime, float_bytes, num_threads=threads)
        # preprocessing describes the input images feed, by the bundle's own names
        pre = _preprocessing(opts, fmodel.input_specs)
        # Task, heads, then labels against the class head, before the (long) calibration.
        task, heads = _task_heads(opts.task, fmodel, run_all(fmodel, rep.rows(0, 64)),
                                  (ev if ev is not None else rep).y, opts.heads)
        head = next((i for i, k in enumerate(heads.values()) if k == "class"), None)
        single = len(heads) == 1  # one output: scored as today, whatever its size
        # the output top-1 metrics are computed on
        scored = 0 if single and task in ("classification", "raw") else head
        out_classes = (int(np.prod(fmodel.output_specs[scored].shape[1:]))
                       if scored is not None else 0)
        if out_classes == 0 and (opts.labels_file is not None):
            raise DatasetError(f"{opts.labels_file}: labels given but no output of the model "
                               f"is a class head (outputs: {', '.join(heads)})")
        labels, ev = _labels(opts, out_classes, ev, rep,
                             "" if single else fmodel.output_specs[scored].name
                             if scored is not None else "")
        tick: Callable[[int], None] | None = None
        mixed: dict[str, Any] | None = None
        if opts.max_drop is not None or opts.max_error is not None:
            steps.stage("mixed-precision search")
            found = _mixed(opts, exported, rep, ev, fmodel, runtime, threads, scored, profile)
            quant_bytes, mixed, tried, mode = found.content, found.section, found.tried, found.mode
        else:
            tried = []
            if mode in CALIBRATED_MODES:
                tick = steps.start(f"calibrating {mode}", rep.n)
            else:
                steps.stage(f"converting {mode}")
            quant_bytes = (lowbit.quantize_weights(float_bytes, mode) if mode in LOWBIT_MODES
                           else convert(exported, mode, io_dtype, rep.xs, tick))
    qmodel = LoadedModel(runtime, quant_bytes, num_threads=threads)

    data = ev if ev is not None else rep
    tick = steps.start("evaluating", 2 * data.n + (rep.n if ev is not None else 0))
    f_outs = run_all(fmodel, data.xs, tick)
    q_outs = run_all(qmodel, data.xs, tick)
    q_reps = q_outs if ev is None else run_all(qmodel, rep.xs, tick)
    ref = scored if scored is not None else 0
    f_out, q_out = f_outs[ref], q_outs[ref]
    is_prob = is_probability(f_out)
    names = labels or tuple(str(i) for i in range(out_classes))
    y_class = class_indices(data) if scored is not None else None
    comp = compare(f_out, q_out, y_class, names)
    if scored is None:  # no class head: no top-1 metric on some other head
        comp = replace(comp, agreement=None, float_distinct_top1=0, quant_distinct_top1=0)
    regs = [n for n, k in heads.items() if k == "regression"]
    targets = {}  # y scores the regression head of a regression task
    if task == "regression" and len(regs) == 1 and data.y is not None:
        i = list(heads).index(regs[0])
        t = _targets(data.y, regs[0], f_outs[i], data.source)
        if t is not None:
            targets[regs[0]] = t
    head_report = _head_report(heads, f_outs, q_outs, y_class, names, targets)
    detection = dettask.evaluate(heads, f_outs, q_outs) if task == "detection" else None

    runs = opts.latency_runs
    tick = steps.start("measuring latency", runs)
    lat = latency_ms({"float": fmodel, "quant": qmodel}, data.rows(0, 1), runs=runs,
                     progress=tick)
    lat_f, lat_q = lat["float"], lat["quant"]

    graph = inspect_graph(quant_bytes)
    name = opts.name or opts.model.stem
    manifest = Manifest(
        name=name,
        version=opts.version,
        created_at=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        model_sha256=sha256_bytes(quant_bytes),
        model_size=len(quant_bytes),
        inputs=qmodel.input_specs,
        outputs=qmodel.output_specs,
        preprocessing=pre,
        quantization_mode=mode,
        task=task,
        heads=heads,
        output_is_probability=is_prob,
        labels=labels,
        target_profiles=(profile.name,),
        golden=golden_vectors(qmodel, data, opts.golden_atol),
        drift_reference=drift_reference(
            {s.name: o for s, o in zip(qmodel.output_specs, q_reps, strict=True)}, heads,
            {s.name: rep.xs[s.name] for s in qmodel.input_specs},
            scored=None if scored is None else qmodel.output_specs[scored].name,
            classes=out_classes,
            is_prob=is_prob),
        converter_version=converter.__version__,
        tensorflow_version=tf.__version__,
        requires=lowbit.requires_for(mode),
    )
    schema = oldest_schema(manifest)  # schema 1 has no heads table: its task says it
    manifest = replace(manifest, schema_version=schema, heads={} if schema == 1 else heads)
    report: dict[str, Any] = {
        "name": name, "version": opts.version, "profile": profile.name,
        "mode": mode, "io_dtype": qmodel.input_spec.dtype, "source": str(opts.model),
        "runtime": str(runtime), "threads": threads, "classes": out_classes, "task": task,
        "inputs": [s.name for s in qmodel.input_specs],
        "calibration": {"data": rep.source, "samples": rep.n, "requested": opts.samples},
        "size": {"float_bytes": len(float_bytes), "quant_bytes": len(quant_bytes),
                 "ratio": round(len(quant_bytes) / len(float_bytes), 4),
                 "quant_zstd_bytes": len(bundle_zstd.compress(quant_bytes))},
        "evaluation": {"data": data.source, "labelled": data.y is not None, **comp.as_dict(),
                       "heads": head_report,
                       **({"detection": detection} if detection is not None else {})},
        "latency_ms": {"float": lat_f, "quant": lat_q,
                       "speedup": (round(lat_f["mean"] / lat_q["mean"], 3)
                                   if runs and lat_q["mean"] > 0 else None)},
        "ops": op_support(graph.ops, profile, graph),
        "delegate": delegate_summary(graph, profile),
        "memory": memory_check(graph, len(quant_bytes), profile),
    }
    if mode in INT8_MODES:
        report["float_ops"] = explain(graph).as_dict()
    report["unsupported_on_delegate"] = [r["op"] for r in report["ops"] if not r["delegate"]]
    if mixed is not None:
        report["mixed"] = mixed
    if manifest.requires.as_dict():
        report["requires"] = manifest.requires.as_dict()
    report["tradeoff"] = tradeoff_points(report, tried)
    report["warnings"] = build_warnings(report, has_eval=ev is not None)
    return Bundle(manifest, quant_bytes, report, str(opts.output)), report


def write_output(bundle: Bundle, out: Path) -> None:
    """Write atomically (temp beside ``out``, then rename); OutputError on failure."""
    try:
        write_bundle(bundle, out)
    except OSError as e:
        raise OutputError(f"{out}: cannot write bundle ({e.strerror or e})") from e


def convert_to_bundle(opts: ConvertOptions, steps: Steps | None = None) -> dict[str, Any]:
    """Build and write the bundle atomically; returns the report."""
    bundle, report = build_bundle(opts, steps)
    (steps or Steps()).stage("writing bundle")
    write_output(bundle, opts.output)
    note = tradeoff.write(report["tradeoff"], tradeoff.path_for(opts.output),
                          f"{report['name']} v{report['version']} on {report['profile']}")
    if note:
        report["tradeoff_note"] = note
    return report


def _mixed(opts: ConvertOptions, exported: Path, rep: Dataset, ev: Dataset | None,
           fmodel: LoadedModel, runtime: Any, threads: int, scored: int | None,
           profile: DeviceProfile) -> Chosen:
    """The budget search (:mod:`converter.mixedrun`): bytes, mode, report section, candidates."""
    assert ev is not None  # check_budget
    budget = Budget(max_drop=opts.max_drop, max_error=opts.max_error)
    ref = scored if scored is not None else 0
    y = class_indices(ev) if scored is not None else None
    if opts.max_drop is not None and y is None:
        raise OptionError("--max-drop needs a class head scored on labelled --eval data; use "
                          "--max-error for other heads")
    f_out = run_all(fmodel, ev.xs)[ref]
    run = measure_fn(runtime, threads, ev, ref, min(opts.latency_runs, 20))
    return choose(exported, rep, ev, f_out, y, run, budget, profile)
