"""The inspect report as Markdown (layers.md) and the files it writes: layers.json, layers.md and the two plots."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Mapping

from core.fileio import write_text_atomic
from export.layers import LAYERS

FILES = ("layers.json", "layers.md", "layer_error.png", "layer_time.png")


def write_report(out: str | os.PathLike, report: Mapping[str, Any]) -> list[Path]:
    """``OUT/layers.json``, ``OUT/layers.md`` and the two plots (each written to a temp file and renamed)."""
    from deploy.layers.plots import plot_error, plot_time

    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / name for name in FILES]
    write_text_atomic(paths[0], json.dumps(report, indent=2) + "\n")
    write_text_atomic(paths[1], render_markdown(report))
    plot_error(paths[2], report)
    plot_time(paths[3], report)
    return paths


def _label(row: Mapping[str, Any]) -> str:
    return f"{row['runtime']} {row['precision']}"


def _num(value: float | None, digits: int = 2) -> str:
    if value is None:
        return "—"
    if value == 0:
        return "0"
    return f"{value:.{digits}g}" if abs(value) < 1e-3 or abs(value) >= 1e4 else f"{value:.{digits + 1}g}"


def parity_markdown(rows: list[Mapping[str, Any]]) -> list[str]:
    """Relative error and worst-image cosine per layer, one column per runtime × precision."""
    ok = [r for r in rows if not r.get("error")]
    lines = []
    if ok:
        lines += ["Relative error ‖runtime − PyTorch‖ / ‖PyTorch‖ of each layer's output over all images; **bold**: "
                  "beyond the precision's layer tolerance (the first such layer is named below).", "",
                  "| layer | " + " | ".join(_label(r) for r in ok) + " |", "|---|" + "---:|" * len(ok)]
        cells = {r["runtime"] + r["precision"]: {d["layer"]: d for d in r["layers"]} for r in ok}
        for layer in LAYERS:
            row = []
            for r in ok:
                d = cells[r["runtime"] + r["precision"]].get(layer)
                text = _num(d["rel_error"]) if d else "—"
                row.append(text if d is None or d["passed"] else f"**{text}**")
            lines.append(f"| {layer} | " + " | ".join(row) + " |")
        worst = [min((d["cosine"] for d in r["layers"]), default=None) for r in ok]
        top1 = [next((d["top1_agreement"] for d in r["layers"] if d["layer"] == LAYERS[-1]), None) for r in ok]
        tol = [f"{r['tolerance']['max_rel_error']:g} / {r['tolerance']['min_cosine']:g}" for r in ok]
        lines += ["| worst-image cosine (any layer) | " + " | ".join(f"{c:.5f}" if c is not None else "—"
                                                             for c in worst) + " |",
                  "| top-1 agreement (fc8) | " + " | ".join(f"{a:.2%}" if a is not None else "—" for a in top1) + " |",
                  "| first layer beyond tolerance | " + " | ".join(r["first_divergence"] or "none" for r in ok) + " |",
                  "| tolerance (relative error / cosine) | " + " | ".join(tol) + " |",
                  "| probe effect (max Δ logits) | " + " | ".join(_num(r["probe_effect_max_abs"]) for r in ok) + " |"]
    lines += [f"- {_label(r)} ({Path(r['file']).name}): failed: {r['error']}" for r in rows if r.get("error")]
    return lines


def time_markdown(profiles: list[Mapping[str, Any]]) -> list[str]:
    """ms and share per layer, one column per runtime × precision, with the profiler's and the measured totals."""
    ok = [p for p in profiles if p["available"]]
    lines = []
    if ok:
        lines += ["| layer | " + " | ".join(_label(p) for p in ok) + " |", "|---|" + "---:|" * len(ok)]
        for layer in LAYERS:
            cells = []
            for p in ok:
                t = next(t for t in p["layers"] if t["layer"] == layer)
                cells.append(f"{t['ms']:.2f} ({t['share']:.1%})")
            lines.append(f"| {layer} | " + " | ".join(cells) + " |")
        lines += [
            "| layers summed (ms) | " + " | ".join(f"{p['attributed_ms']:.2f}" for p in ok) + " |",
            "| profiler's own total (ms) | " + " | ".join(_num(p["profiler_total_ms"], 3) for p in ok) + " |",
            "| measured p50, no profiler (ms) | " + " | ".join(_num(p["measured_ms"], 3) for p in ok) + " |",
            "| outside the profiler (ms) | " + " | ".join(_num(p["outside_ms"], 2) for p in ok) + " |",
            "| layers summed ÷ measured | " + " | ".join(f"{p['coverage']:.1%}" if p["coverage"] else "—"
                                                       for p in ok) + " |"]
        for p in ok:
            layout = [f"{t['layer']} {t['layout_ms']:.2f}" for t in p["layers"] if t["layout_ms"] > 0.005]
            if layout:
                lines.append(f"- {_label(p)}: layout conversions (ms, included above in the layer they feed): "
                             + ", ".join(layout))
            if p["unattributed"]:
                lines.append(f"- {_label(p)}: nodes the layer map does not name (not in the layers): "
                             + ", ".join(f"{n['name']} {n['ms']:.2f} ms" for n in p["unattributed"]))
    lines += [f"- {_label(p)}: no per-layer timing: {p['reason']}" for p in profiles if not p["available"]]
    return lines


def skipped_markdown(skipped: Mapping[str, str]) -> list[str]:
    """One line per runtime and reason, with the precisions it covers."""
    grouped: dict[tuple[str, str], list[str]] = {}
    for key, reason in skipped.items():
        runtime, precision = key.rsplit(" ", 1)
        grouped.setdefault((runtime, reason), []).append(precision)
    return [f"- {runtime} ({', '.join(precisions)}): {reason}" for (runtime, reason), precisions in grouped.items()]


def render_markdown(report: Mapping[str, Any]) -> str:
    """layers.md: layer parity, then layer time, then what was skipped."""
    files = ", ".join(f"`{Path(f).name}`" for f in report["files"])
    lines = [f"# Inside the model: {files}", "",
             f"Layer parity on {report['images_source']}; layer time at batch {report['batch_size']}. Layers, in "
             f"order: {', '.join(LAYERS)} (a conv or fc layer includes its ReLU).", ""]
    if report.get("interrupted"):
        lines += ["**Interrupted**: the tables hold what finished.", ""]
    if report["parity"]:
        lines += ["## Layer parity against PyTorch fp32", "", *parity_markdown(report["parity"]), ""]
    if report["profiles"]:
        warning = (report.get("load") or {}).get("warning")
        lines += [f"## Layer time at batch {report['batch_size']}", "", *([f"**{warning}**", ""] if warning else []),
                  "Each runtime's own profiler, per layer in ms (share of the layers' sum). Layout conversions "
                  "(reorders, transposes) count in the layer that reads their output; \"outside the profiler\" is "
                  "the measured latency the profiler does not see (input and output copies, the call itself).", "",
                  *time_markdown(report["profiles"]), ""]
    if report["skipped"]:
        lines += ["## Not run here", "", *skipped_markdown(report["skipped"]), ""]
    return "\n".join(lines)
