"""``tradeoff.png``: accuracy (or output error) against size, latency as marker size.

One point per candidate and per mode in ``report["tradeoff"]`` (a list of ``{"label",
"size_bytes", "accuracy" | "rel_error", "latency_ms", "chosen"}``). matplotlib is an
optional converter dependency: without it :func:`write` returns a one-line note and
draws nothing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edge_agent.fsutil import atomic_write_bytes

FILE = "tradeoff.png"


def path_for(out: Path) -> Path:
    """Beside report.json: inside a bundle directory, else ``<out>.tradeoff.png``."""
    return out.parent / f"{out.name}.{FILE}" if out.suffix == ".tar" else out / FILE


def write(points: list[dict[str, Any]], dest: Path, title: str) -> str | None:
    """Draw ``points`` to ``dest`` atomically; a note (str) when matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
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
    fig, ax = plt.subplots(figsize=(8, 5), dpi=100)
    for p in points:
        y = p[key] * (100 if acc else 1)
        s = 40 + 400 * (p["latency_ms"] / top if p.get("latency_ms") else 0.1)
        ax.scatter(p["size_bytes"] / 1024, y, s=s, alpha=0.6,
                   color="tab:red" if p.get("chosen") else "tab:blue",
                   edgecolors="black" if p.get("chosen") else "none", linewidths=2)
        lat = f", {p['latency_ms']:.3g} ms" if p.get("latency_ms") else ""
        ax.annotate(f"{p['label']}{lat}", (p["size_bytes"] / 1024, y), fontsize=8,
                    xytext=(6, 6), textcoords="offset points")
    ax.set_xlabel("model size (KiB)")
    ax.set_ylabel(ylabel)
    ax.set_title(f"{title}: marker size = per-invoke latency, red = chosen", fontsize=10)
    ax.grid(alpha=0.3)
    ax.margins(0.15)
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png")
    plt.close(fig)
    atomic_write_bytes(dest, buf.getvalue())
    return None
