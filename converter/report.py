"""Human-readable tables for reports, profiles and manifests (rich when available)."""

from __future__ import annotations

from typing import Any

from edge_agent.bundle import Manifest
from edge_agent.profiles import DeviceProfile


def _kb(n: int) -> str:
    return f"{n / 1024:,.1f} KiB" if n < 2**20 else f"{n / 2**20:,.2f} MiB"


def _pct(v: float | None) -> str:
    return "–" if v is None else f"{100 * v:.2f}%"


def report_lines(r: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(metric, float, quantized) rows of the summary table."""
    ev, lat, size = r["evaluation"], r["latency_ms"], r["size"]
    return [
        ("size", _kb(size["float_bytes"]), f"{_kb(size['quant_bytes'])} (×{size['ratio']:.3f})"),
        ("top-1 accuracy", _pct(ev["float_top1"]), _pct(ev["quant_top1"])),
        ("top-1 drop", "", "–" if ev["top1_drop_pp"] is None else f"{ev['top1_drop_pp']:.2f} pp"),
        ("top-1 agreement", "", _pct(ev["top1_agreement"])),
        ("max / mean |Δ output|", "",
         f"{ev['max_abs_output_diff']:.4f} / {ev['mean_abs_output_diff']:.4f}"),
        ("latency p50 / invoke", f"{lat['float']['p50']:.3f} ms", f"{lat['quant']['p50']:.3f} ms"),
    ]


def print_report(r: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    con = Console()
    t = Table(title=f"{r['name']} v{r['version']} → {r['profile']} ({r['mode']}, io "
                    f"{r['io_dtype']}, {r['runtime']}, {r['threads']} threads)")
    t.add_column("metric")
    t.add_column("float32", justify="right")
    t.add_column(r["mode"], justify="right")
    for row in report_lines(r):
        t.add_row(*row)
    con.print(t)
    if r["evaluation"]["per_class"]:
        pc = Table(title=f"per class ({r['mode']}, {r['evaluation']['samples']} eval samples)")
        for c in ("label", "precision", "recall", "F1", "support"):
            pc.add_column(c, justify="right")
        for row in r["evaluation"]["per_class"]:
            pc.add_row(row["label"], f"{row['precision']:.3f}", f"{row['recall']:.3f}",
                       f"{row['f1']:.3f}", str(row["support"]))
        con.print(pc)
    ops = Table(title=f"ops on {r['profile']}")
    for c in ("op", "count", "dtypes", "runtime", "delegate"):
        ops.add_column(c)
    for o in r["ops"]:
        ops.add_row(o["op"], str(o["count"]), ",".join(o["dtypes"]),
                    "yes" if o["runtime"] else "NO", "yes" if o["delegate"] else "cpu fallback")
    con.print(ops)


def print_profiles(profiles: list[DeviceProfile]) -> None:
    from rich.console import Console
    from rich.table import Table

    t = Table(title="device profiles")
    for c in ("name", "arch", "cores", "threads", "delegate", "io", "memory", "runtimes",
              "description"):
        t.add_column(c)
    for p in profiles:
        t.add_row(p.name, p.arch, str(p.cores), str(p.default_threads), p.delegate, p.io_dtype,
                  f"{p.memory_budget_mb} MB",
                  ", ".join(f"{r.name}>={r.min_version}" for r in p.runtimes), p.description)
    Console().print(t)


def manifest_summary(m: Manifest) -> list[tuple[str, str]]:
    def spec(s: Any) -> str:
        q = f" q=({s.scale:.6g}, {s.zero_point})" if s.quantized else ""
        return f"{s.name} {list(s.shape)} {s.dtype}{q}"

    rows = [
        ("name", m.name), ("version", str(m.version)), ("created", m.created_at),
        ("model", f"{m.model_size} bytes sha256 {m.model_sha256}"),
        ("producer", f"converter {m.converter_version}, tensorflow {m.tensorflow_version}"),
        ("quantization", m.quantization_mode), ("task", m.task),
        ("inputs", "; ".join(spec(s) for s in m.inputs)),
        ("outputs", "; ".join(spec(s) for s in m.outputs)),
        ("preprocessing", f"resize={m.preprocessing.resize} color={m.preprocessing.color} "
                          f"mean={list(m.preprocessing.mean)} std={list(m.preprocessing.std)}"),
        ("labels", ", ".join(m.labels) or "–"),
        ("target profiles", ", ".join(m.target_profiles)),
        ("golden vectors", str(len(m.golden))),
        ("drift reference", f"{m.drift_reference.samples} samples" if m.drift_reference else "–"),
    ]
    return rows
