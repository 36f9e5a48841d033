"""Text and Markdown renderings of a BenchReport, and the number formats every report shares (strings only)."""
from __future__ import annotations

from core.environment import describe_environment
from deploy.reports import BenchReport, BenchResult

_COLUMNS = ("runtime", "precision", "batch", "p50 ms", "p90 ms", "p99 ms", "mean ms", "device p50 ms", "img/s",
            "vs {base}", "CV", "parity")


def _row(r: BenchResult) -> list[str]:
    lat, dev = r.latency_ms, r.device_latency_ms
    parity = "-" if r.parity is None else "PASS" if r.parity.passed else "FAIL"
    return [r.runtime + (" (partial)" if r.interrupted else ""), r.precision, str(r.batch_size),
            ms(lat and lat.p50), ms(lat and lat.p90), ms(lat and lat.p99), ms(lat and lat.mean),
            ms(dev and dev.p50), f"{r.throughput:.1f}", "-" if r.vs_reference is None else f"{r.vs_reference:.2f}x",
            "-" if lat is None else f"{lat.cv:.1%}" + ("!" if r.warnings and "unstable" in r.warnings[0] else ""),
            parity]


def ms(value: float | None) -> str:
    """A latency for a table: three decimals below 1 ms (GPU latencies), two below 100 ms, none above."""
    if value is None:
        return "-"
    return f"{value:.3f}" if value < 1 else f"{value:.2f}" if value < 100 else f"{value:.0f}"


def pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.2%}"


def _header(report: BenchReport) -> list[str]:
    return [c.format(base=report.ratio_baseline or "reference") for c in _COLUMNS]


def _details(report: BenchReport, bullet: str) -> list[str]:
    lines = []
    for name, cold in report.cold_start.items():
        extra = ", ".join(f"{k} {v}" for k, v in cold.details.items() if k != "engine_path")
        lines.append(f"{bullet}cold start {name}: load {cold.load_ms:.0f} ms, first inference "
                     f"{cold.first_inference_ms:.1f} ms (batch {cold.batch_size}){', ' + extra if extra else ''}")
    for name, parity in report.parity.items():
        for check in parity.checks:
            lines.append(f"{bullet}parity {check} [{parity.note}]")
            for out in check.outputs:
                lines.extend(f"{bullet}  {out.name}: {f}" for f in out.failures)
    lines += [f"{bullet}skipped {n}: {why}" for n, why in report.skipped.items()]
    lines += [f"{bullet}ERROR {n}: {msg}" for n, msg in report.errors.items()]
    lines += [f"{bullet}warning {r.runtime} b{r.batch_size}: {w}" for r in report.results for w in r.warnings]
    lines += [f"{bullet}note: {n}" for n in report.notes]
    return lines


def render_text(report: BenchReport) -> str:
    """A fixed-width table plus cold start, parity, skips, errors and warnings."""
    ref = report.reference
    rows = [_header(report)] + [_row(r) for r in report.results]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    table = ["  ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths)))
             for row in rows]
    head = [f"Model: {report.model} ({report.precision})",
            f"Environment: {describe_environment(report.environment)}",
            f"Reference: {ref.get('name')} on {ref.get('device')} ({ref.get('precision')}) — {ref.get('source')}", ""]
    tail = [""] + _details(report, "  ")
    if report.interrupted:
        tail.append("Interrupted: the table holds what was measured before Ctrl-C.")
    return "\n".join(head + (table if report.results else ["(no results)"]) + tail)


def render_markdown(report: BenchReport) -> str:
    """The same content as a Markdown document."""
    ref = report.reference
    header = _header(report)
    lines = [f"# Bench: `{report.model}` ({report.precision})", "",
             f"- Environment: {describe_environment(report.environment)}",
             f"- Reference: {ref.get('name')} on {ref.get('device')} ({ref.get('precision')}) — {ref.get('source')}",
             f"- Result: {'PASS' if report.passed else 'INTERRUPTED' if report.interrupted else 'FAIL'}", "",
             "| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(_row(r)) + " |" for r in report.results]
    lines += ["", "## Details", ""] + _details(report, "- ")
    return "\n".join(lines) + "\n"


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
