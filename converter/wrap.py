"""``edge-convert bundle``: wrap an existing ``.tflite`` (float, dynamic, int8) into a bundle.

No TensorFlow: the model runs on the agent's own LiteRT runtime. The file is checked to
be a TFLite flatbuffer of bounded size before an interpreter sees it
(:mod:`edge_agent.tflite_file`); its named specs come from the runtime's binding
(:func:`edge_agent.runtime.signature.tflite_specs`' rules: signature names, else tensor
names); its quantization mode is read from the graph; the profile's support check runs
on its ops; golden vectors are its own outputs here on the representative inputs (read
by the converter's own loader, :func:`converter.data.load_dataset`) or on generated
ones (:func:`generated`); the drift reference comes from the representative data when
given. The bundle is built in memory and written atomically
at the end, so a failure leaves nothing at the output path.

Raises ModelSourceError (not a flatbuffer, too large, no inputs/outputs, refused by the
runtime), DatasetError, OptionError, OutputError, ProfileError, RuntimeUnavailableError.
"""

from __future__ import annotations

import datetime as dt
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

import converter
from converter import dettask
from converter.build import check_output_path, write_output
from converter.data import Dataset, check_data_path, load_dataset, read_labels
from converter.errors import DatasetError, ModelSourceError, OptionError
from converter.evaluate import latency_ms, run_all
from converter.goldens import GOLDEN_COUNT, drift_reference, golden_vectors, is_probability
from converter.graph import BOUNDARY_OPS, FLOAT_DTYPES, Graph, inspect_graph
from converter.imageinput import check_normalisation, image_preprocessing
from converter.options import BundleOptions
from converter.support import activations, delegate_summary, memory_check, op_support
from converter.tfload import SourceInput
from edge_agent.bundle import MAX_BUNDLE_BYTES, Bundle, Manifest, sha256_bytes
from edge_agent.errors import ModelLoadError
from edge_agent.manifest import NAME_RE, TASKS, TensorSpec, oldest_schema
from edge_agent.profiles import DeviceProfile, load_profile
from edge_agent.runtime.backends import select_runtime
from edge_agent.runtime.model import LoadedModel
from edge_agent.tflite_file import read_tflite

DEFAULT_PROFILE = "generic-x86_64"
INTEGER = ("int8", "uint8")
SEED = 20261202  # generated golden inputs


@dataclass(frozen=True, kw_only=True)
class WrapOptions(BundleOptions):
    name: str
    version: int
    representative: Path | None = None  # default: generated golden inputs, no drift
    profile: str = DEFAULT_PROFILE


def quantization_mode(graph: Graph) -> str:
    """What an existing graph is: ``int16x8`` (int16 activations), ``int8`` (every
    computing op on 8-bit activations), ``int8-fallback`` (some 8-bit, some float),
    else float activations with int8 weights (``dynamic``), float16 weights
    (``float16``) or float32 weights (``float32``)."""
    compute = [o for o in graph.ops if o.name not in BOUNDARY_OPS]
    out_dtypes = [{graph.tensors[t].dtype for t in o.outputs} for o in compute]
    if any("int16" in d for d in out_dtypes):
        return "int16x8"
    eight = sum(1 for d in out_dtypes if d & set(INTEGER))
    flt = sum(1 for d in out_dtypes if d & FLOAT_DTYPES)
    if eight:
        return "int8-fallback" if flt else "int8"
    acts = activations(graph)
    consts = {t.dtype for i, t in graph.tensors.items() if i not in acts}
    if consts & set(INTEGER):
        return "dynamic"
    return "float16" if "float16" in consts else "float32"


def _values(s: TensorSpec) -> int:
    return math.prod(s.shape[1:])


def _describe(outputs: tuple[TensorSpec, ...]) -> str:
    return ", ".join(f"{s.name} {list(s.shape)}" for s in outputs)


def choose_heads(task: str | None, outputs: tuple[TensorSpec, ...], labels: tuple[str, ...],
                 source: str, overrides: dict[str, str] | None = None
                 ) -> tuple[str, dict[str, str]]:
    """The task and what each output is (``heads`` by name).

    A class head is the output ``--labels`` count matches, or the one output of a
    one-output model with several values (the converter's rule); nothing is guessed
    from generated outputs. ``--task detection``: the roles of
    :func:`converter.dettask.detection_heads` (``overrides``: ``--heads``). Raises
    DatasetError (labels fit no output, or several) and OptionError (a task the outputs
    cannot be).
    """
    if task == "detection":
        if labels:
            raise OptionError("--task detection has no class head; drop --labels")
        return task, dettask.detection_heads(outputs, overrides or {})
    head: str | None = None
    if labels:
        fits = [s.name for s in outputs if _values(s) == len(labels)]
        if len(fits) != 1:
            raise DatasetError(f"{source}: {len(labels)} labels, but "
                               f"{'no output has' if not fits else 'several outputs have'} "
                               f"{len(labels)} values (outputs: {_describe(outputs)})")
        head = fits[0]
    elif len(outputs) == 1 and _values(outputs[0]) > 1 and task in (None, "classification"):
        head = outputs[0].name
    if task is None:
        task = ("classification" if head else "raw") if len(outputs) == 1 else "multi_output"
    if task == "classification" and head is None:
        raise OptionError(f"--task classification needs a class head: pass --labels FILE "
                          f"with one line per value of it (outputs: {_describe(outputs)})")
    if task == "regression" and head is not None:
        raise OptionError("--task regression has no class head; drop --labels")
    if task == "multi_output" and len(outputs) < 2:
        raise OptionError(f"--task multi_output needs at least two outputs, the model has "
                          f"{len(outputs)}")
    other = "regression" if task == "regression" else "raw"
    return task, {s.name: "class" if s.name == head else other for s in outputs}


def generated(specs: Sequence[TensorSpec], n: int, seed: int = SEED) -> Dataset:
    """``n`` deterministic samples per input, in each tensor's dtype and range: integer
    tensors over their dtype's range (quantized ones: the raw steps), float tensors in
    ``[-1, 1]`` (what normalized image, audio and feature inputs are), index-like
    ``int32``/``int64`` tensors in ``{0, 1}`` (token ids, lengths: a larger value may be
    out of a lookup's range)."""
    rng = np.random.default_rng(seed)
    xs: dict[str, np.ndarray] = {}
    for s in specs:
        shape, dt = (n, *s.shape[1:]), np.dtype(s.dtype)
        if s.dtype in ("int8", "uint8", "int16"):
            info = np.iinfo(dt)
            xs[s.name] = rng.integers(info.min, int(info.max) + 1, shape).astype(dt)
        elif dt.kind in "iu":
            xs[s.name] = rng.integers(0, 2, shape).astype(dt)
        else:
            xs[s.name] = rng.uniform(-1.0, 1.0, shape).astype(dt)
    return Dataset(xs, None, (), f"generated (seed {seed})", "generated")


def source_inputs(specs: Sequence[TensorSpec]) -> tuple[SourceInput, ...]:
    """The inputs as the data loaders see them: quantized tensors take float data in
    model units (quantized when fed), the others their own dtype."""
    return tuple(SourceInput(s.name, tuple(s.shape[1:]), "float32" if s.quantized else s.dtype)
                 for s in specs)


def _check_profile(profile: DeviceProfile, mode: str, model: LoadedModel) -> None:
    if not profile.requires_full_integer:
        return
    if mode != "int8":
        raise OptionError(f"profile {profile.name} ({profile.delegate}) runs only full-integer "
                          f"models; this model is {mode} (convert it with edge-convert convert "
                          "--mode int8, or pick another --profile)")
    floats = [s.name for s in (*model.input_specs, *model.output_specs) if s.dtype not in INTEGER]
    if floats:
        raise OptionError(f"profile {profile.name} ({profile.delegate}) needs integer model "
                          f"input and output; {', '.join(floats)} are not 8-bit")


def preflight(opts: WrapOptions) -> DeviceProfile:
    """Every check that needs no model: flags, profile, paths."""
    if not NAME_RE.fullmatch(opts.name):
        raise OptionError(f"--name must be letters, digits, '.', '_' or '-' (at most 64), "
                          f"got {opts.name!r}")
    if opts.version < 1:
        raise OptionError(f"--version must be a positive integer, got {opts.version}")
    if opts.task is not None and opts.task not in TASKS:
        raise OptionError(f"--task must be one of {', '.join(TASKS)}, got {opts.task!r}")
    if opts.heads and opts.task != "detection":
        raise OptionError("--heads applies to --task detection only")
    if opts.samples < 1 or opts.latency_runs < 0:
        raise OptionError("--samples must be >= 1 and --latency-runs >= 0")
    check_normalisation(opts.preprocessing)
    profile = load_profile(opts.profile)
    check_output_path(opts.output)
    if not opts.model.is_file():
        raise ModelSourceError(f"{opts.model}: no such model file")
    if opts.labels_file is not None and not opts.labels_file.is_file():
        raise DatasetError(f"{opts.labels_file}: no such labels file")
    if opts.representative is not None:
        check_data_path(opts.representative)
    return profile


def _load(opts: WrapOptions, threads: int) -> tuple[bytes, LoadedModel]:
    try:
        data = read_tflite(opts.model, MAX_BUNDLE_BYTES)
        return data, LoadedModel(select_runtime(), data, num_threads=threads)
    except ModelLoadError as e:  # the user's file, not this machine: bad input
        raise ModelSourceError(str(e)) from e


def build_wrapped(opts: WrapOptions) -> tuple[Bundle, dict[str, Any]]:
    """The bundle (not yet written) and its report."""
    profile = preflight(opts)
    threads = min(profile.default_threads, os.cpu_count() or 1)
    content, model = _load(opts, threads)
    graph = inspect_graph(content)
    mode = quantization_mode(graph)
    _check_profile(profile, mode, model)
    labels = read_labels(opts.labels_file) if opts.labels_file else ()
    task, heads = choose_heads(opts.task, model.output_specs, labels,
                               str(opts.labels_file or opts.model), opts.heads)
    pre = image_preprocessing(model.input_specs, opts.preprocessing, color=opts.color,
                              image_input=opts.image_input)
    rep = (load_dataset(opts.representative, source_inputs(model.input_specs), pre,
                        samples=opts.samples) if opts.representative else None)
    data = rep if rep is not None else generated(model.input_specs, GOLDEN_COUNT)
    golden = golden_vectors(model, data, opts.golden_atol)
    single = len(model.output_specs) == 1
    head = next((s.name for s in model.output_specs if heads[s.name] == "class"), None)
    is_prob, drift = True, None
    if rep is not None:
        outs = {s.name: o for s, o in zip(model.output_specs, run_all(model, rep.xs),
                                          strict=True)}
        is_prob = is_probability(outs[head]) if head is not None else True
        drift = drift_reference(outs, heads, rep.xs, scored=head, is_prob=is_prob,
                                classes=0 if head is None else _values(
                                    next(s for s in model.output_specs if s.name == head)))
    lat = latency_ms({"model": model}, data.rows(0, 1), runs=opts.latency_runs)["model"]
    manifest = Manifest(
        name=opts.name, version=opts.version,
        created_at=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        model_sha256=sha256_bytes(content),
        model_size=len(content), inputs=model.input_specs, outputs=model.output_specs,
        preprocessing=pre, quantization_mode=mode, task=task,
        heads={} if single and task in ("classification", "raw") else heads,
        output_is_probability=is_prob, labels=labels, target_profiles=(profile.name,),
        golden=golden, drift_reference=drift, converter_version=converter.__version__,
        extra={"wrapped_from": opts.model.name})
    manifest = replace(manifest, schema_version=oldest_schema(manifest))
    report: dict[str, Any] = {
        "name": opts.name, "version": opts.version, "profile": profile.name, "mode": mode,
        "task": task, "heads": heads, "source": str(opts.model), "runtime": str(model.runtime),
        "threads": threads, "signature": model.signature,
        "inputs": [_spec_row(s) for s in model.input_specs],
        "outputs": [_spec_row(s) for s in model.output_specs],
        "golden": {"vectors": len(golden),
                   "inputs": "representative" if rep is not None else "generated"},
        "representative": None if rep is None else {"data": rep.source, "samples": rep.n},
        "size": {"model_bytes": len(content)}, "latency_ms": lat,
        "ops": op_support(graph.ops, profile, graph), "delegate": delegate_summary(graph, profile),
        "memory": memory_check(graph, len(content), profile),
    }
    report["unsupported_on_delegate"] = [r["op"] for r in report["ops"] if not r["delegate"]]
    return Bundle(manifest, content, report, str(opts.output)), report


def _spec_row(s: TensorSpec) -> dict[str, Any]:
    return {"name": s.name, "shape": list(s.shape), "dtype": s.dtype, "scale": s.scale,
            "zero_point": s.zero_point}


def wrap_to_bundle(opts: WrapOptions) -> dict[str, Any]:
    """Build and write the bundle atomically; returns the report."""
    bundle, report = build_wrapped(opts)
    write_output(bundle, opts.output)
    return report


def report_lines(r: dict[str, Any]) -> list[str]:
    """The report as plain lines (the CLI's output without --json)."""
    lat, d = r["latency_ms"], r["delegate"]
    ms = "–" if lat["p50"] is None else f"p50 {lat['p50']:.3f} ms, p95 {lat['p95']:.3f} ms"
    lines = [f"{r['name']} v{r['version']} → {r['profile']}: {r['mode']}, task {r['task']}, "
             f"measured on {r['runtime']} with {r['threads']} thread(s)",
             f"size {r['size']['model_bytes']} bytes; latency per invoke {ms}",
             f"golden vectors: {r['golden']['vectors']} ({r['golden']['inputs']} inputs)",
             f"ops on delegate: {d['delegated_ops']}/{d['total_ops']} ({d['delegate']})"]
    lines += [f"  input  {s['name']} {s['shape']} {s['dtype']}" for s in r["inputs"]]
    lines += [f"  output {s['name']} {s['shape']} {s['dtype']} ({r['heads'][s['name']]})"
              for s in r["outputs"]]
    lines += [f"  op {o['op']:<24} ×{o['count']:<4} {','.join(o['dtypes']):<16} "
              f"{'delegate' if o['delegate'] else 'cpu fallback'}" for o in r["ops"]]
    return lines
