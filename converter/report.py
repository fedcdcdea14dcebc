"""The conversion report: its warnings, and human-readable tables (rich).

Tables go to stdout (they are the command's output); progress and errors go to stderr.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, TextIO

from converter.dettask import detection_rows
from converter.modes import CALIBRATED_MODES
from edge_agent.bundle import Manifest, TensorSpec
from edge_agent.profiles import DeviceProfile

if TYPE_CHECKING:
    from rich.console import Console

MAX_DROP_PP = 1.0  # warn above this top-1 drop
MIN_CALIBRATION = 100  # fewer samples often give poor activation ranges
MIN_DISTINCT_SAMPLES = 10  # below this, "always the same class" may be chance
MAX_CLASS_ROWS = 20  # per-class table: beyond this, show the worst classes only
PIPE_WIDTH = 160  # columns, when stdout is a file or a pipe


def build_warnings(r: dict[str, Any], *, has_eval: bool) -> list[str]:
    """What the user should look at before shipping this bundle, one sentence each.

    Without ``--eval`` the evaluation ran on the representative data: each warning says
    what was measured there (accuracy too, when that data is labelled).
    """
    w: list[str] = []
    ev = r["evaluation"]
    if not has_eval and ev.get("labelled"):
        w.append("no --eval data: accuracy and agreement are measured on the labelled "
                 "calibration samples, which the model was calibrated on; pass --eval "
                 "held-out data for a fair figure")
    elif not has_eval:
        w.append("no --eval data and unlabelled calibration samples: accuracy not measured; "
                 "agreement is on the calibration samples")
    if ev["top1_drop_pp"] is not None and ev["top1_drop_pp"] > MAX_DROP_PP:
        w.append(f"top-1 accuracy dropped by {ev['top1_drop_pp']:.2f} pp with {r['mode']} "
                 f"(more than {MAX_DROP_PP:g} pp)")
    if ev["samples"] >= MIN_DISTINCT_SAMPLES and r.get("classes", 2) > 1:
        if ev["float_distinct_top1"] == 1:
            w.append(f"the float model predicts the same class for all {ev['samples']} "
                     "evaluation samples: accuracy and agreement say nothing (untrained model, "
                     "or wrong --mean/--std?)")
        elif ev["quant_distinct_top1"] == 1:
            w.append(f"the {r['mode']} model predicts the same class for every sample while "
                     "the float model does not: its outputs collapsed (a nearly flat softmax "
                     "is below the int8 output step of 1/256?)")
    cal = r["calibration"]
    if r["mode"] in CALIBRATED_MODES and cal["samples"] < MIN_CALIBRATION:
        w.append(f"calibrated on only {cal['samples']} samples; use at least "
                 f"{MIN_CALIBRATION} representative samples for reliable ranges")
    fl = float_ops_line(r)
    if fl:
        w.append(fl)
    d = r["delegate"]
    if d["first_unmapped"] is not None:
        f = d["first_unmapped"]
        w.append(f"Edge TPU mapping stops at op #{f['index']} {f['op']} ({f['reason']}): it "
                 f"and the {len(d['cpu_ops']) - 1} op(s) after it run on the CPU")
    elif r["unsupported_on_delegate"] and d["delegate"] != "none":
        w.append(f"{d['delegate']} does not run {', '.join(r['unsupported_on_delegate'])}; "
                 "those ops fall back to the CPU kernels")
    m = r["memory"]
    if not m["fits"]:
        w.append(f"needs about {m['estimate_mb']:.1f} MB (model {m['model_mb']:.1f} + "
                 f"activations {m['activations_peak_mb']:.1f} + delegate copy "
                 f"{m['delegate_copy_mb']:.1f}), over {r['profile']}'s budget of "
                 f"{m['budget_mb']} MB")
    return w


def float_ops_line(r: dict[str, Any]) -> str | None:
    """What stayed float in an int8 graph (``--allow-float-ops``), and what it costs."""
    fl = r.get("float_ops")
    if not fl or not fl["float_ops"]:
        return None

    def names(rows: list[dict[str, Any]]) -> str:
        return ", ".join(o["op"] + (f" ×{o['count']}" if o["count"] > 1 else "") for o in rows)

    parts = []
    if fl["no_int8_kernel"]:
        why = ("kept float by the accuracy budget" if r.get("mixed") else "no int8 kernel")
        parts.append(f"{names(fl['no_int8_kernel'])} ({why})")
    if fl["float_glue"]:
        parts.append(f"{names(fl['float_glue'])} (float only because their neighbours are)")
    lat, size = r["latency_ms"], r["size"]
    cost = (f"{fl['boundary_ops']} QUANTIZE/DEQUANTIZE ops, {_kb(fl['float_weight_bytes'])} of "
            f"float32 weights (int8: a quarter); model {_kb(size['quant_bytes'])} vs float32 "
            f"{_kb(size['float_bytes'])}")
    if lat["quant"]["p50"] is not None and lat["float"]["p50"] is not None:
        cost += f", p50 {_ms(lat['quant']['p50'])} vs float32 {_ms(lat['float']['p50'])}"
    return (f"{fl['float_ops']} of {fl['total_ops']} ops run in float: {'; '.join(parts)}; "
            f"cost: {cost}")


def _console(file: TextIO | None) -> Console:
    """A rich console; when piped (not a TTY) wide enough that no table column collapses."""
    import sys

    from rich.console import Console

    out = file or sys.stdout
    tty = hasattr(out, "isatty") and out.isatty()
    return Console(file=out, highlight=False, width=None if tty else PIPE_WIDTH)


def _kb(n: int) -> str:
    return f"{n / 1024:,.1f} KiB" if n < 2**20 else f"{n / 2**20:,.2f} MiB"


def _pct(v: float | None) -> str:
    return "–" if v is None else f"{100 * v:.2f}%"


def _ms(v: float | None) -> str:
    return "–" if v is None else f"{v:.3f} ms"


def report_lines(r: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(metric, float, quantized) rows of the summary table."""
    ev, lat, size, mem = r["evaluation"], r["latency_ms"], r["size"], r["memory"]
    d = r["delegate"]
    det = ev.get("detection")
    scored = detection_rows(det) if det is not None else [  # no top-1 on a box tensor
        ("top-1 accuracy", _pct(ev["float_top1"]), _pct(ev["quant_top1"])),
        ("top-1 drop", "", "–" if ev["top1_drop_pp"] is None else f"{ev['top1_drop_pp']:.2f} pp"),
        ("top-1 agreement", "", _pct(ev["top1_agreement"])),
        ("max / mean |Δ output|", "",
         f"{ev['max_abs_output_diff']:.4f} / {ev['mean_abs_output_diff']:.4f}")]
    return [
        ("size", _kb(size["float_bytes"]), f"{_kb(size['quant_bytes'])} (×{size['ratio']:.3f})"
         + (f", zstd {_kb(size['quant_zstd_bytes'])}" if "quant_zstd_bytes" in size else "")),
        *scored,
        ("latency p50 / invoke", _ms(lat["float"]["p50"]), _ms(lat["quant"]["p50"])),
        ("ops on delegate", "", f"{d['delegated_ops']}/{d['total_ops']} ({d['delegate']})"),
        ("memory estimate", "", f"{mem['estimate_mb']:.2f} MB of {mem['budget_mb']} MB"),
    ]


def print_report(r: dict[str, Any], file: TextIO | None = None) -> None:
    from rich.table import Table

    con = _console(file)
    con.print(f"[bold]{r['name']} v{r['version']} → {r['profile']}[/bold]: {r['mode']}, io "
              f"{r['io_dtype']}, measured on {r['runtime']} with {r['threads']} thread(s)")
    t = Table()
    t.add_column("metric")
    t.add_column("float32", justify="right")
    t.add_column(r["mode"], justify="right")
    for row in report_lines(r):
        t.add_row(*row)
    con.print(t)
    rows = r["evaluation"]["per_class"]
    if rows:
        title = f"per class ({r['mode']}, {r['evaluation']['samples']} eval samples)"
        if len(rows) > MAX_CLASS_ROWS:
            rows = sorted(rows, key=lambda c: (c["f1"], c["label"]))[:MAX_CLASS_ROWS // 2]
            title += f", worst {len(rows)} of {len(r['evaluation']['per_class'])} by F1"
        pc = Table(title=title)
        for c in ("label", "precision", "recall", "F1", "support"):
            pc.add_column(c, justify="right")
        for row in rows:
            pc.add_row(row["label"], f"{row['precision']:.3f}", f"{row['recall']:.3f}",
                       f"{row['f1']:.3f}", str(row["support"]))
        con.print(pc)
    if r.get("mixed"):
        con.print(mixed_table(r))
        for line in mixed_lines(r):
            con.print(line, markup=False)
    ops = Table(title=f"ops on {r['profile']}")
    for c in ("op", "count", "dtypes", "runtime", "delegate"):
        ops.add_column(c)
    for o in r["ops"]:
        ops.add_row(o["op"], str(o["count"]), ",".join(o["dtypes"]),
                    "yes" if o["runtime"] else "NO", "yes" if o["delegate"] else "cpu fallback")
    con.print(ops)
    for w in r.get("warnings", []):
        con.print(f"[yellow]warning:[/yellow] {w}", markup=True)


def mixed_table(r: dict[str, Any]) -> Any:
    """Every candidate the accuracy budget search tried, the chosen one last (marked)."""
    from rich.table import Table

    m = r["mixed"]
    edgetpu = r["delegate"]["delegate"] == "edgetpu"
    (flag, limit), = m["budget"].items()
    t = Table(title=f"mixed-precision candidates (--{flag} {limit:g}, "
                    f"{m['quantized_ops']} quantized ops)")
    for c in ("#", "candidate", "float ops", "int16 ops", "size", "accuracy", "drop",
              "rel error", "latency", "meets", *(("CPU ops (Edge TPU)",) if edgetpu else ())):
        t.add_column(c, justify="left" if c == "candidate" else "right")
    for i, c in enumerate(m["candidates"], 1):
        last = i == len(m["candidates"])
        t.add_row(str(i), c["label"] + (" ← chosen" if last and c["meets"] else ""),
                  str(len(c["float_ops"])), str(c["int16_ops"]), _kb(c["size_bytes"]),
                  _pct(c["accuracy"]),
                  "–" if c["drop_points"] is None else f"{c['drop_points']:.2f} pp",
                  f"{c['rel_error']:.4g}", _ms(c["latency_ms"]), "yes" if c["meets"] else "no",
                  *((str(len(c["cpu_ops"])),) if edgetpu else ()))
    return t


def mixed_lines(r: dict[str, Any]) -> list[str]:
    """The chosen candidate's float ops, int16x8 availability and, on an Edge TPU
    profile, what runs on the CPU."""
    m = r["mixed"]
    ch = m["chosen"]
    out = [f"kept float: {', '.join(ch['float_ops']) or 'none'}"
           + (f"; int16 activations on {ch['int16_ops']} op(s)" if ch["int16_ops"] else ""),
           f"int16x8: {m['int16x8']}", *m.get("notes", [])]
    if r["delegate"]["delegate"] == "edgetpu":
        cpu = ch["cpu_ops"]
        out.append(f"on {r['profile']}: {len(cpu)} of {r['delegate']['total_ops']} ops run on "
                   f"the CPU ({', '.join(cpu) or 'none'}): float ops cannot go on the Edge "
                   "TPU, and its compiler maps nothing after the first op it cannot map")
    return out


def print_profiles(profiles: list[DeviceProfile], file: TextIO | None = None) -> None:
    """A table of profiles; plain columns when rich is absent (agent-only install)."""
    try:
        from rich.table import Table
    except ImportError:
        import sys

        out = file or sys.stdout
        for p in profiles:
            print(f"{p.name:<18} {p.arch:<8} {p.delegate:<8} {p.io_dtype:<6} "
                  f"{p.memory_budget_mb:>5} MB  {p.description}", file=out)
        return

    t = Table(title="device profiles")
    for c in ("name", "arch", "cores", "threads", "delegate", "io", "memory"):
        t.add_column(c, no_wrap=True)
    t.add_column("runtimes")
    t.add_column("description")
    for p in profiles:
        t.add_row(p.name, p.arch, str(p.cores), str(p.default_threads), p.delegate, p.io_dtype,
                  f"{p.memory_budget_mb} MB",
                  ", ".join(f"{r.name}>={r.min_version}" for r in p.runtimes), p.description)
    _console(file).print(t)


def manifest_summary(m: Manifest) -> list[tuple[str, str]]:
    def spec(s: TensorSpec) -> str:
        q = f" q=({s.scale:.6g}, {s.zero_point})" if s.quantized else ""
        return f"{s.name} {list(s.shape)} {s.dtype}{q}"

    p, img = m.preprocessing, m.image_input
    return [
        ("name", m.name), ("version", str(m.version)), ("created", m.created_at),
        ("schema", str(m.schema_version)),
        ("model", f"{m.model_size} bytes sha256 {m.model_sha256}"),
        ("producer", f"converter {m.converter_version}, tensorflow {m.tensorflow_version}"),
        ("quantization", m.quantization_mode), ("task", m.task),
        ("inputs", "; ".join(spec(s) for s in m.inputs)),
        ("outputs", "; ".join(spec(s) for s in m.outputs)),
        ("preprocessing", f"image input {img.name} resize={list(p.resize) if p.resize else None} "
                          f"color={p.color} order={p.channel_order} layout={p.layout} "
                          f"mean={list(p.mean)} std={list(p.std)} resample={p.resample}"
         if img is not None else f"no image input (takes no images); mean={list(p.mean)} "
                                 f"std={list(p.std)}"),
        ("labels", _labels_line(m.labels)),
        ("target profiles", ", ".join(m.target_profiles) or "–"),
        ("golden vectors", str(len(m.golden))),
        ("drift reference", f"{m.drift_reference.samples} samples, "
                            f"{len(m.drift_reference.class_hist)} classes"
         if m.drift_reference else "–"),
    ]


def _labels_line(labels: tuple[str, ...]) -> str:
    if not labels:
        return "–"
    shown = ", ".join(labels[:12])
    return shown + (f", … ({len(labels)} in all)" if len(labels) > 12 else "")
