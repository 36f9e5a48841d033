"""The number formats and table layout every report shares, and the summaries of train, export and triton (strings
only; the bench, verdict and gate renderings are in deploy/bench/render.py)."""
from __future__ import annotations

from typing import Any


def ms(value: float | None) -> str:
    """A latency for a table: three decimals below 1 ms (GPU latencies), two below 100 ms, none above."""
    if value is None:
        return "-"
    return f"{value:.3f}" if value < 1 else f"{value:.2f}" if value < 100 else f"{value:.0f}"


def pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.2%}"


def fixed_width(rows: list[list[str]], left: set[int]) -> list[str]:
    """Terminal table lines: columns padded to their widest cell, those in ``left`` left-aligned (text), the others
    right-aligned (numbers)."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return ["  ".join(c.ljust(w) if i in left else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths))).rstrip()
            for row in rows]


def config_text(config: dict[str, Any] | None) -> str:
    """A serving configuration (capacity.json's ``config``): ``batch <= 8, delay 0 us, 2 x 1 thread``."""
    if not config:
        return "-"
    layout = f"{config['executors']} x {config['threads']} thread{'s' if config['threads'] > 1 else ''}"
    mode = " (OpenVINO streams)" if config.get("mode") == "streams" else ""
    return f"batch <= {config['max_batch']}, delay {config['queue_delay_us']} us, {layout}{mode}"


def export_table(reports, accuracy: dict | None) -> list[str]:
    """The parity table of an export (one row per input set) and its accuracy line."""
    head = f"{'inputs':<8} {'n':>5} {'max_abs':>9} {'max_rel':>9} {'cosine':>10} {'top-1':>8}  {'result':<6} tolerance"
    lines = [head, "-" * len(head)]
    for r in reports:
        tol = r.tolerance
        bound = (f"atol {tol.atol:g} + rtol {tol.rtol:g}, " if tol.elementwise else "") + \
            f"cosine >= {tol.min_cosine:g}, top-1 >= {tol.min_top1_agreement:.0%}"
        for o in r.outputs:
            lines.append(f"{r.inputs:<8} {r.samples:>5} {o.max_abs:>9.3g} {o.max_rel:>9.3g} {o.cosine:>10.6f} "
                         f"{o.top1_agreement:>8.2%}  {'PASS' if o.passed else 'FAIL':<6} {bound}")
            lines += [f"  ✗ {failure}" for failure in o.failures]
    if accuracy:
        drop = (accuracy["reference"] - accuracy["onnx"]) * 100
        lines.append(f"Accuracy on {int(accuracy['images'])} validation images: fp32 PyTorch "
                     f"{accuracy['reference']:.2%}, this ONNX {accuracy['onnx']:.2%} (drop {drop:.2f} points)")
    return lines


def export_summary(result) -> list[str]:
    """What ``export`` wrote: the file, its form and hash, then the parity table."""
    batch = f"static batch {result.batch}" if result.batch else "symbolic batch"
    return [f"Exported {result.path} ({result.precision}, LRN {result.lrn}, opset {result.opset}, IR "
            f"{result.ir_version}, {batch}, {result.size_bytes / 2**20:.1f} MiB) in {result.timings_s['total']:.1f} s",
            f"sha256 {result.sha256}", *export_table(result.parity, result.accuracy)]


def triton_summary(result) -> tuple[list[str], list[str]]:
    """The models a Triton repository write produced (stdout lines) and its notes (stderr lines)."""
    lines = [f"Wrote Triton model repository {result.repo}:"]
    for model in result.models:
        c = model.config
        batching = (f"max_batch_size {c.max_batch_size}, preferred batches {list(c.preferred_batch_sizes)}"
                    if c.max_batch_size else "max_batch_size 0 (static batch: no dynamic batching)")
        lines.append(f"  {c.name}: {c.platform or c.backend}, {batching}, {c.instance_count} x {c.instance_kind}")
        lines += [f"    {path}" for path in model.files]
    lines.append(f"Serve it with: tritonserver --model-repository={result.repo.resolve()}")
    return lines, [f"Note: {note}" for note in result.notes]


def train_summary(result) -> list[str]:
    meta, best = result.meta, result.meta.get("metrics", {})
    lines = [f"Trained {meta['epochs_run']} epoch(s): {meta['stop_reason']}."]
    if best:
        lines.append(f"Best epoch {meta['best_epoch'] + 1}: val_accuracy {best['val_accuracy']:.4f}, val_loss "
                     f"{best['val_loss']:.4f} (weights from the {meta['weights_from']}).")
    return lines + [f"Checkpoint: {result.weights}  (+ model.json, history.csv)"]
