"""capacity.png: p99 latency against offered QPS of every Server run, per runtime × precision, with the SLO line
(headless: a Figure on the Agg canvas, no pyplot)."""
from __future__ import annotations

import os
from typing import Any

from core.fileio import atomic_path


def plot_capacity(path: str | os.PathLike, data: dict[str, Any]) -> None:
    """One series per runtime × precision: each Server run's target QPS and p99 (filled: VALID and within the
    SLO), the answer circled; the SLO as a horizontal line."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8, 4.8), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    slo = data["slo_ms"]
    for row in data["results"]:
        runs = sorted(((t["settings"]["target_qps"], t["p99_ms"], t["valid"] and t["p99_ms"] <= slo)
                       for t in row["trials"] if t["scenario"] == "server" and t.get("p99_ms") is not None))
        if not runs:
            continue
        label = f"{row['runtime']} {row['precision']}"
        line = ax.plot([q for q, _, _ in runs], [p for _, p, _ in runs], ":", lw=0.8, label=label)[0]
        color = line.get_color()
        ax.scatter([q for q, _, ok in runs if ok], [p for _, p, ok in runs if ok], color=color, s=22)
        ax.scatter([q for q, _, ok in runs if not ok], [p for _, p, ok in runs if not ok], facecolors="none",
                   edgecolors=color, s=22)
        if row.get("server_max_qps") is not None:
            ax.scatter([row["server_max_qps"]], [row["server_p99_ms"]], s=140, facecolors="none", edgecolors=color,
                       linewidths=1.6)
    ax.axhline(slo, color="black", ls="--", lw=1, label=f"SLO p99 {slo:g} ms")
    ax.set(xlabel="offered load: LoadGen Server target QPS", ylabel="p99 latency (ms, log)", yscale="log",
           title=f"Capacity at p99 <= {slo:g} ms (filled: VALID within the SLO; circled: the answer)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png", dpi=110)
