"""The pipeline's PNG plots: training curves, latency distributions and throughput vs batch size (headless)."""
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
