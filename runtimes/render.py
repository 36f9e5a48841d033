"""Text and Markdown renderings of a BenchReport (strings only; cli.py prints or writes them)."""
from __future__ import annotations

from runtimes.env import describe_environment
from runtimes.reports import BenchReport, BenchResult

_COLUMNS = ("runtime", "precision", "batch", "p50 ms", "p90 ms", "p99 ms", "mean ms", "device p50 ms", "img/s",
            "vs {base}", "CV", "parity")


def _row(r: BenchResult) -> list[str]:
    lat, dev = r.latency_ms, r.device_latency_ms
    parity = "-" if r.parity is None else "PASS" if r.parity.passed else "FAIL"
    return [r.runtime + (" (partial)" if r.interrupted else ""), r.precision, str(r.batch_size),
            _ms(lat and lat.p50), _ms(lat and lat.p90), _ms(lat and lat.p99), _ms(lat and lat.mean),
            _ms(dev and dev.p50), f"{r.throughput:.1f}", "-" if r.vs_reference is None else f"{r.vs_reference:.2f}x",
            "-" if lat is None else f"{lat.cv:.1%}" + ("!" if r.warnings and "unstable" in r.warnings[0] else ""),
            parity]


def _ms(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.3f}" if value < 10 else f"{value:.1f}"


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
