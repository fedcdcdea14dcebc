"""``tradeoff.png``: accuracy (or output error) against size, latency as marker size.

One point per candidate and per mode in ``report["tradeoff"]`` (a list of ``{"label",
"size_bytes", "accuracy" | "rel_error", "latency_ms", "chosen"}``): float, dynamic,
int16x8, int8, the mixed candidates, int4-weights, pruned+int8, whichever were computed.
Each mode family has its own colour (legend), the chosen point a thick black ring and a
"chosen" label; labels are nudged apart so none overlaps another; the size axis turns
logarithmic when sizes span more than 8×. matplotlib is an optional converter
dependency: without it :func:`write` returns a one-line note and draws nothing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edge_agent.bundle import is_tar_path
from edge_agent.fsutil import atomic_write_bytes

FILE = "tradeoff.png"
FAMILIES = (  # label prefix → legend name, colour (matplotlib "tab:" palette)
    ("float", "float32", "tab:gray"), ("dynamic", "dynamic", "tab:olive"),
    ("float16", "float16", "tab:brown"), ("int16x8", "int16x8", "tab:purple"),
    ("int8-fallback", "int8 + float ops", "tab:orange"), ("int8", "int8", "tab:blue"),
    ("mixed", "mixed (ops kept float)", "tab:orange"),
    ("int4", "int4 weights", "tab:green"), ("pruned", "pruned + int8", "tab:cyan"))
LOG_SPAN = 8.0  # sizes spanning more than this: log size axis
NUDGES = ((6, 6), (6, -14), (6, 18), (6, -26), (6, 30), (-6, -38), (6, 42), (6, -50))


def path_for(out: Path) -> Path:
    """Beside report.json: inside a bundle directory, else ``<out>.tradeoff.png`` (for a
    ``.tar`` or ``.tar.zst`` output)."""
    return out.parent / f"{out.name}.{FILE}" if is_tar_path(out) else out / FILE


def family(label: str) -> tuple[str, str]:
    """(legend name, colour) of a point's label."""
    for prefix, name, colour in FAMILIES:
        if label.startswith(prefix):
            return name, colour
    return "other", "tab:pink"


def _place(boxes: list[tuple[float, float, float, float]], x: float, y: float, w: float,
           h: float, r: float) -> tuple[float, float]:
    """The first nudge (points offset, clear of a marker of radius ``r``) whose label box
    overlaps none placed so far."""
    def box(dx: float, dy: float) -> tuple[float, float, float, float]:
        x0 = x + dx if dx >= 0 else x + dx - w
        return (x0, y + dy, x0 + w, y + dy + h)

    nudges = [(dx + (r if dx > 0 else -r), dy) for dx, dy in NUDGES]
    for dx, dy in nudges:
        b = box(dx, dy)
        if not any(b[0] < o[2] and o[0] < b[2] and b[1] < o[3] and o[1] < b[3] for o in boxes):
            boxes.append(b)
            return dx, dy
    boxes.append(box(*nudges[0]))
    return nudges[0]


def write(points: list[dict[str, Any]], dest: Path, title: str,
          size_name: str = "model size") -> str | None:
    """Draw ``points`` to ``dest`` atomically; a note (str) when matplotlib is missing.
    ``size_name`` labels the x axis (what ``size_bytes`` measures)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.lines import Line2D
    except ImportError:
        return "tradeoff.png not drawn: matplotlib is not installed (pip install matplotlib)"
    import io

    acc = all(p.get("accuracy") is not None for p in points)
    key, ylabel = ("accuracy", "top-1 accuracy (%)") if acc else ("rel_error",
                                                                    "relative output error")
    points = [p for p in points if p.get(key) is not None and p.get("size_bytes")]
    if not points:  # no eval data (or a head scored neither way): nothing to place
        return "tradeoff.png not drawn: no candidate has an accuracy or output error " \
               "(give --eval data)"
    lats = [p["latency_ms"] for p in points if p.get("latency_ms")]
    top = max(lats) if lats else 1.0
    fig, ax = plt.subplots(figsize=(9, 5.5), dpi=100)
    legend: dict[str, str] = {}
    xs = [p["size_bytes"] / 1024 for p in points]
    areas = [40 + 500 * (p["latency_ms"] / top if p.get("latency_ms") else 0.1) for p in points]
    for p, x, s in zip(points, xs, areas, strict=True):
        name, colour = family(p["label"])
        ax.scatter(x, p[key] * (100 if acc else 1), s=s, alpha=0.75, color=colour,
                   edgecolors="black" if p.get("chosen") else "white",
                   linewidths=3 if p.get("chosen") else 0.8,
                   zorder=1 if p.get("chosen") else 2)  # a point at the same spot stays seen
        legend.setdefault(name, colour)
    if max(xs) / min(xs) > LOG_SPAN:
        from matplotlib.ticker import FuncFormatter

        ax.set_xscale("log")
        plain = FuncFormatter(lambda v, _pos: f"{v:g}")  # 20, 30, 100 (not 2×10¹)
        ax.xaxis.set_major_formatter(plain)
        ax.xaxis.set_minor_formatter(plain)
    ax.margins(0.18)
    ax.set_xlabel(f"{size_name} (KiB" + (", log scale)" if ax.get_xscale() == "log" else ")"))
    ax.set_ylabel(ylabel)
    ax.set_title(f"{title}\nmarker area ∝ per-invoke latency (largest {top:.3g} ms); "
                 "black ring = chosen", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(handles=[Line2D([], [], marker="o", ls="", color=c, label=n, markersize=7)
                       for n, c in legend.items()], fontsize=8, loc="best", framealpha=0.8)
    fig.tight_layout()
    fig.canvas.draw()  # final limits: label placement works in display points
    boxes: list[tuple[float, float, float, float]] = []
    to_pt = 72 / fig.dpi
    order = sorted(range(len(points)), key=lambda i: (not points[i].get("chosen"), xs[i]))
    for i in order:
        p = points[i]
        y = p[key] * (100 if acc else 1)
        lat = f", {p['latency_ms']:.3g} ms" if p.get("latency_ms") else ""
        text = f"{p['label']}{lat}" + ("  ← chosen" if p.get("chosen") else "")
        px, py = ax.transData.transform((xs[i], y)) * to_pt
        dx, dy = _place(boxes, px, py, 5.0 * len(text), 10.0, areas[i] ** 0.5 / 2)
        ax.annotate(text, (xs[i], y), fontsize=8, xytext=(dx, dy), textcoords="offset points",
                    ha="left" if dx >= 0 else "right",
                    fontweight="bold" if p.get("chosen") else "normal",
                    arrowprops={"arrowstyle": "-", "color": "0.6", "lw": 0.6}
                    if abs(dy) > 6 else None)
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    atomic_write_bytes(dest, buf.getvalue())
    return None
