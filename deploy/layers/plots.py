"""The inspect plots (headless Agg): relative error by layer per runtime × precision (log scale), and time by layer as
stacked bars per runtime × precision."""
from __future__ import annotations

import os
from typing import Any, Mapping

from core.fileio import atomic_path
from export.layers import LAYERS

FLOOR = 1e-9  # an exact match (relative error 0) is drawn here: a log axis has no 0


def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig, fig.subplots()


def _save(fig, path: str | os.PathLike) -> None:
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png", dpi=110)


def plot_error(path: str | os.PathLike, report: Mapping[str, Any]) -> None:
    """One line per runtime × precision: each layer's relative error against PyTorch fp32; an x marks a layer beyond
    the precision's tolerance. PyTorch fp32 itself (the reference) is not drawn."""
    fig, ax = _figure(10, 5)
    styles = {"fp32": "-", "fp16": "--", "int8": "-.", "bf16": ":"}
    drawn = 0
    for row in report["parity"]:
        if row.get("error") or not row["layers"] or (row["runtime"], row["precision"]) == ("torch", "fp32"):
            continue
        index = [LAYERS.index(d["layer"]) for d in row["layers"]]
        values = [max(d["rel_error"], FLOOR) for d in row["layers"]]
        line, = ax.plot(index, values, styles.get(row["precision"], "-"), marker="o", ms=3,
                        label=f"{row['runtime']} {row['precision']}")
        bad = [(i, v) for i, v, d in zip(index, values, row["layers"]) if not d["passed"]]
        if bad:
            ax.plot(*zip(*bad), "x", color=line.get_color(), ms=10, mew=2)
        drawn += 1
    ax.set_yscale("log")
    ax.set_xticks(range(len(LAYERS)), LAYERS)
    ax.set(title="Layer parity against PyTorch fp32 (x: beyond the precision's layer tolerance)",
           xlabel="layer", ylabel=f"relative error ‖runtime − PyTorch‖ / ‖PyTorch‖ (exact: {FLOOR:g})")
    ax.grid(alpha=0.3, which="both")
    if drawn:
        ax.legend(fontsize=8, ncols=2)
    else:
        ax.text(0.5, 0.5, "no runtime compared", transform=ax.transAxes, ha="center")
    _save(fig, path)


def plot_time(path: str | os.PathLike, report: Mapping[str, Any]) -> None:
    """A stacked bar per runtime × precision with a profile: each layer's ms; a black tick marks the measured
    end-to-end latency at the same batch (the gap above the bar is what the profiler does not see)."""
    from matplotlib import colormaps

    profiles = [p for p in report["profiles"] if p["available"]]
    fig, ax = _figure(max(6.0, 1.1 * len(profiles) + 3), 5.5)
    colors = colormaps["tab20"].resampled(len(LAYERS))
    for x, profile in enumerate(profiles):
        bottom = 0.0
        for k, layer in enumerate(LAYERS):
            ms = next(t["ms"] for t in profile["layers"] if t["layer"] == layer)
            ax.bar(x, ms, bottom=bottom, color=colors(k), edgecolor="white", lw=0.3, label=layer if x == 0 else None)
            bottom += ms
        if profile["measured_ms"]:
            ax.plot([x - 0.4, x + 0.4], [profile["measured_ms"]] * 2, color="black", lw=2,
                    label="measured p50" if x == 0 else None)
    ax.set_xticks(range(len(profiles)), [f"{p['runtime']}\n{p['precision']}" for p in profiles])
    ax.set(title=f"Time by layer at batch {report['batch_size']} (each runtime's own profiler)", ylabel="ms per batch")
    ax.grid(alpha=0.3, axis="y")
    if profiles:
        handles, labels = ax.get_legend_handles_labels()
        ax.legend(handles[::-1], labels[::-1], fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    else:
        ax.text(0.5, 0.5, "no runtime profiled", transform=ax.transAxes, ha="center")
    _save(fig, path)
