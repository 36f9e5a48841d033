"""The pipeline's PNG plots: training curves, latency distributions, throughput vs batch size and the deployment
choice (accuracy vs throughput) (headless)."""
from __future__ import annotations

import os
from typing import Any, Mapping, Sequence

from core.fileio import atomic_path


def _figure(width: float, height: float, ncols: int = 1):
    """A Figure on the Agg canvas: no pyplot, no display and no global backend switch (safe on servers)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig, fig.subplots(1, ncols, squeeze=False)[0]


def _save(fig, path: str | os.PathLike) -> None:
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png", dpi=110)


def plot_training(path: str | os.PathLike, rows: Sequence[Mapping[str, float]], best_epoch: int | None,
                  early_stopped: bool, lr_reductions: Sequence[Mapping[str, float]]) -> None:
    """Loss and accuracy (train and validation) per epoch, with lr reductions and the best / early-stop epochs.

    Args:
        path: The PNG to write.
        rows: ``history.csv`` rows (``loss``, ``accuracy``, ``val_loss``, ``val_accuracy``, ``lr``), epoch 1 first.
        best_epoch: The 1-based epoch whose weights were kept, or None.
        early_stopped: Whether EarlyStopping ended the run (its last epoch gets a marker).
        lr_reductions: ``{"epoch": first 1-based epoch at the new lr, "lr": new lr}`` per reduction.
    """
    from matplotlib.ticker import MaxNLocator

    fig, (ax_loss, ax_acc) = _figure(11, 4.2, ncols=2)
    epochs = list(range(1, len(rows) + 1))
    for ax, key, title in ((ax_loss, "loss", "Loss"), (ax_acc, "accuracy", "Accuracy")):
        ax.plot(epochs, [r[key] for r in rows], "o-", ms=3, label=f"train {key}")
        ax.plot(epochs, [r[f"val_{key}"] for r in rows], "s-", ms=3, label=f"val {key}")
        for change in lr_reductions:
            # The new lr starts at this epoch: draw the line just before it, between the two epochs.
            ax.axvline(change["epoch"] - 0.5, color="tab:purple", ls=":", lw=1)
            ax.annotate(f"lr {change['lr']:.0e}", (change["epoch"] - 0.5, 0.02), xycoords=("data", "axes fraction"),
                        rotation=90, fontsize=7, color="tab:purple", ha="right", va="bottom")
        if best_epoch is not None and 1 <= best_epoch <= len(rows):
            ax.axvline(best_epoch, color="tab:green", ls="--", lw=1, label=f"best epoch {best_epoch}")
            ax.plot([best_epoch], [rows[best_epoch - 1][f"val_{key}"]], "*", color="tab:green", ms=12)
        if early_stopped and rows:
            ax.axvline(len(rows), color="tab:red", ls="-.", lw=1, label=f"early stop (epoch {len(rows)})")
        ax.set(title=title, xlabel="epoch", xlim=(0.5, max(len(rows), 1) + 0.5))
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    _save(fig, path)


def plot_latency(path: str | os.PathLike, samples_ms: Mapping[str, Sequence[float]], batch_size: int) -> None:
    """Box plots (whiskers at the 1st/99th percentile) of the per-iteration latency of each runtime × precision.

    Args:
        path: The PNG to write.
        samples_ms: Label (e.g. ``onnxruntime int8``) → per-iteration host latencies in ms, all at ``batch_size``.
        batch_size: The batch size the samples were measured at (for the title).
    """
    labels = list(samples_ms)
    fig, (ax,) = _figure(8, 0.9 + 0.55 * max(len(labels), 1))
    if labels:
        ax.boxplot([list(samples_ms[k]) for k in labels], orientation="horizontal", whis=(1, 99), sym=".",
                   tick_labels=[f"{k} (n={len(samples_ms[k])})" for k in labels])
        ax.invert_yaxis()  # first runtime on top, as in the report table
        values = [v for k in labels for v in samples_ms[k] if v > 0]
        if values and max(values) > 20 * min(values):  # e.g. int8 vs eager torch on a CPU: keep both readable
            ax.set_xscale("log")
    else:
        ax.text(0.5, 0.5, "no latency measurements", ha="center", va="center", transform=ax.transAxes)
    ax.set(title=f"Latency per call at batch {batch_size} (box: p25–p75, whiskers: p1–p99)", xlabel="ms")
    ax.grid(axis="x", alpha=0.3)
    _save(fig, path)


def plot_throughput(path: str | os.PathLike, rows: Sequence[Mapping[str, Any]]) -> None:
    """Images per second vs batch size (log x), one line per runtime × precision.

    Args:
        path: The PNG to write.
        rows: Report rows with ``runtime``, ``precision``, ``batch_size`` and ``throughput`` (img/s).
    """
    series: dict[str, list[tuple[int, float]]] = {}
    for r in rows:
        if r.get("throughput"):
            series.setdefault(f"{r['runtime']} {r['precision']}", []).append((r["batch_size"], r["throughput"]))
    fig, (ax,) = _figure(7, 4.5)
    for label, points in series.items():
        points.sort()
        ax.plot([b for b, _ in points], [t for _, t in points], "o-", label=label)
    batches = sorted({b for points in series.values() for b, _ in points})
    ax.set_xscale("log", base=2)
    if batches:
        ax.set_xticks(batches, [str(b) for b in batches])
        ax.legend(fontsize=8)
    ax.set(title="Throughput vs batch size", xlabel="batch size (log scale)", ylabel="images / s")
    ax.grid(alpha=0.3, which="both")
    _save(fig, path)


def plot_choice(path: str | os.PathLike, rows: Sequence[Mapping[str, Any]], recommendation: Mapping[str, Any]) -> None:
    """Top-1 accuracy vs throughput at the largest batch, one point per runtime × precision, with the accuracy
    budget as a line and the recommended points marked.

    Args:
        path: The PNG to write.
        rows: Report rows with ``runtime``, ``precision``, ``batch_size``, ``throughput``, ``top1_accuracy`` and
            ``accuracy_delta_points``.
        recommendation: deploy/verdict.py's dict: ``max_accuracy_drop_points``, ``latency``, ``throughput`` (each
            None or with ``runtime`` and ``precision``) and ``excluded``.
    """
    measured = [r for r in rows if r.get("top1_accuracy") is not None and r.get("throughput")]
    batch = max((r["batch_size"] for r in measured), default=None)
    points = [r for r in measured if r["batch_size"] == batch]
    excluded = {(e["runtime"], e["precision"]) for e in recommendation.get("excluded", [])}
    fig, (ax,) = _figure(7.5, 4.8)
    points.sort(key=lambda r: r["throughput"])
    for r in points:
        eligible = (r["runtime"], r["precision"]) not in excluded
        ci = r.get("throughput_ci95")
        xerr = [[r["throughput"] - ci[0]], [ci[1] - r["throughput"]]] if ci else None
        ax.errorbar(r["throughput"], r["top1_accuracy"] * 100, xerr=xerr, fmt="o" if eligible else "x", ms=7,
                    color="tab:blue" if eligible else "tab:gray", ecolor="0.55", elinewidth=1, capsize=3)
    if points:
        reference = points[0]["top1_accuracy"] * 100 - points[0]["accuracy_delta_points"]
        budget = recommendation["max_accuracy_drop_points"]
        ax.axhline(reference, color="tab:green", ls=":", lw=1, label=f"PyTorch fp32 top-1 {reference:.2f}%")
        ax.axhline(reference - budget, color="tab:red", ls="--", lw=1,
                   label=f"budget: {budget:.2f} points below PyTorch fp32")
        for objective, marker, size in (("throughput", "*", 22), ("latency", "D", 14)):
            pick = recommendation.get(objective)
            row = pick and next((r for r in points if (r["runtime"], r["precision"]) ==
                                 (pick["runtime"], pick["precision"])), None)
            if row:
                ax.plot(row["throughput"], row["top1_accuracy"] * 100, marker, ms=size, mfc="none", mew=1.8,
                        color="tab:orange" if objective == "throughput" else "tab:purple",
                        label=f"{objective} pick: {pick['runtime']} {pick['precision']}")
        values = [r["throughput"] for r in points]
        if max(values) > 20 * min(values):
            ax.set_xscale("log")
        accuracies = [r["top1_accuracy"] * 100 for r in points] + [reference, reference - budget]
        pad = max(0.25, (max(accuracies) - min(accuracies)) * 0.15)  # both lines and every label inside
        ax.set_ylim(min(accuracies) - pad, max(accuracies) + pad)
        ax.margins(x=0.12)  # room for the labels of the fastest and slowest points
        ax.legend(fontsize=8, loc="best", markerscale=0.5)
        ax.set(title=f"Accuracy vs throughput at batch {batch} (x: not eligible; bars: 95% interval)",
               xlabel="images / s", ylabel="top-1 accuracy (%)")
        _label_points(fig, ax, [(r["throughput"], r["top1_accuracy"] * 100, f"{r['runtime']} {r['precision']}")
                                for r in points])
    else:
        ax.text(0.5, 0.5, "no task-level accuracy measured", ha="center", va="center", transform=ax.transAxes)
        ax.set(title="Accuracy vs throughput")
    ax.grid(alpha=0.3)
    _save(fig, path)


def _label_points(fig, ax, points: Sequence[tuple[float, float, str]]) -> None:
    """Label each point where its text overlaps no other label, point or the legend: candidates at growing offsets
    above and below, the first free one wins, with a leader line once it sits away from its point. Runtimes of equal
    accuracy and similar speed (the common case) would otherwise print on top of each other."""
    from matplotlib.text import Text

    fig.canvas.draw()                 # the final layout, so display coordinates stay put...
    fig.set_layout_engine("none")     # ...while the labels are added
    renderer = fig.canvas.get_renderer()
    legend = ax.get_legend()
    taken = [legend.get_window_extent(renderer)] if legend else []
    for x, y, _ in points:
        px, py = ax.transData.transform((x, y))
        taken.append(_box(px - 5, py - 5, px + 5, py + 5))
    axes_box = ax.get_window_extent(renderer)
    offsets = [(6, dy) for step in range(12) for dy in (6 + 14 * step, -16 - 14 * step)]
    for x, y, text in points:
        for dx, dy in offsets:
            label = ax.annotate(text, (x, y), textcoords="offset points", xytext=(dx, dy), fontsize=8,
                                arrowprops=None if abs(dy) < 20 else {"arrowstyle": "-", "color": "0.6", "lw": 0.6})
            label.update_positions(renderer)
            box = Text.get_window_extent(label, renderer)  # the text alone: Annotation's own adds the leader line
            inside = axes_box.x0 <= box.x0 and box.x1 <= axes_box.x1 and axes_box.y0 <= box.y0 and box.y1 <= axes_box.y1
            if inside and not any(box.overlaps(other) for other in taken):
                taken.append(box)
                break
            label.remove()
        else:  # nowhere free: the nearest place, overlapping rather than missing
            ax.annotate(text, (x, y), textcoords="offset points", xytext=(6, 6), fontsize=8)


def _box(x0: float, y0: float, x1: float, y1: float):
    from matplotlib.transforms import Bbox

    return Bbox([[x0, y0], [x1, y1]])
