"""The figure of RESULTS.md: p50 latency against throughput (matplotlib, from the `train` extra)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any


def plot(
    path: Path,
    summary: Mapping[str, Mapping[Any, Mapping[str, Any]]],
    floor: Mapping[str, Any] | None,
    title: str,
) -> None:
    """p50 latency against requests/s, one line per configuration, one marker per connection level."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5.5), dpi=120)
    for name, by_conn in summary.items():
        pts = sorted(((int(c), p) for c, p in by_conn.items()), key=lambda cp: cp[0])
        xs = [p["rps"] for _, p in pts]
        ys = [p["p50_ms"] for _, p in pts]
        (line,) = ax.plot(xs, ys, marker="o", label=name)
        for (conns, p), x, y in zip(pts, xs, ys, strict=True):
            label = f"{conns}c" + ("" if p["ok"] else " ERR")
            ax.annotate(label, (x, y), textcoords="offset points", xytext=(5, 4), fontsize=8, color=line.get_color())
            if not p["ok"]:
                ax.plot([x], [y], marker="x", color="red", markersize=10)
    for key, style in (("int8@1", ":"), ("fp32@1", "--")):
        p = (floor or {}).get("points", {}).get(key)
        if p:
            ax.axhline(
                p["p50_ms"],
                linestyle=style,
                color="grey",
                linewidth=1,
                label=f"bare ORT {key.split('@')[0].upper()} batch 1 (floor)",
            )
    ax.set_xscale("log")
    ax.set_yscale("log")
    from matplotlib.ticker import FuncFormatter

    plain = FuncFormatter(lambda v, _: f"{v:g}")
    for axis in (ax.xaxis, ax.yaxis):
        axis.set_major_formatter(plain)
        axis.set_minor_formatter(FuncFormatter(lambda v, _: f"{v:g}" if f"{v:.0e}"[0] in "25" else ""))
    ax.set_xlabel("requests/s (log)")
    ax.set_ylabel("p50 latency, ms (log)")
    ax.set_title(title, fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
