"""Text and Markdown renderings of a BenchReport, the deployment verdict and the regression gate (strings only)."""
from __future__ import annotations

import math

from core.environment import describe_environment
from deploy.bench.reports import BenchReport, BenchResult
from deploy.bench.stats import METHOD
from deploy.render import config_text, fixed_width, ms, pct

_COLUMNS = ("runtime", "precision", "batch", "p50 ms", "p50 95% CI", "p99 ms", "mean ms", "device p50 ms", "img/s",
            "img/s 95% CI", "vs {base}", "CV", "parity")


def _row(r: BenchResult) -> list[str]:
    lat, dev = r.latency_ms, r.device_latency_ms
    parity = "-" if r.parity is None else "PASS" if r.parity.passed else "FAIL"
    return [r.runtime + (" (partial)" if r.interrupted else ""), r.precision, str(r.batch_size),
            ms(lat and lat.p50), ci(r.p50_ci95, ms), ms(lat and lat.p99), ms(lat and lat.mean),
            ms(dev and dev.p50), f"{r.throughput:.1f}", ci(r.throughput_ci95, lambda v: f"{v:.1f}"),
            "-" if r.vs_reference is None else f"{r.vs_reference:.2f}x",
            "-" if lat is None else f"{lat.cv:.1%}" + ("!" if r.warnings and "unstable" in r.warnings[0] else ""),
            parity]


def ci(value, fmt) -> str:
    """A 95 % interval for a table: ``lo–hi``, or - without one."""
    return "-" if value is None else f"{fmt(value[0])}–{fmt(value[1])}"


def _header(report: BenchReport) -> list[str]:
    return [c.format(base=report.ratio_baseline or "reference") for c in _COLUMNS]


def _details(report: BenchReport, bullet: str) -> list[str]:
    lines = []
    for name, cold in report.cold_start.items():
        extra = ", ".join(f"{k} {v}" for k, v in cold.details.items() if k != "engine_path")
        lines.append(f"{bullet}cold start {name}: load {cold.load_ms:.0f} ms, first inference "
                     f"{cold.first_inference_ms:.1f} ms (batch {cold.batch_size}){', ' + extra if extra else ''}")
    for parity in report.parity.values():
        for check in parity.checks:
            lines.append(f"{bullet}parity {check} [{parity.note}]")
            for out in check.outputs:
                lines.extend(f"{bullet}  {out.name}: {f}" for f in out.failures)
        if parity.divergence and not parity.passed:
            lines.append(f"{bullet}  {parity.divergence}")
    lines += [f"{bullet}skipped {n}: {why}" for n, why in report.skipped.items()]
    lines += [f"{bullet}ERROR {n}: {msg}" for n, msg in report.errors.items()]
    lines += [f"{bullet}warning {r.runtime} b{r.batch_size}: {w}" for r in report.results for w in r.warnings]
    lines += [f"{bullet}note: {n}" for n in report.notes]
    load = report.environment.get("load") or {}
    if load.get("warning"):
        lines.append(f"{bullet}WARNING: {load['warning']}")
    if report.results:
        lines.append(f"{bullet}95% CI: {METHOD}, over {_rounds(report)} timed round(s) interleaved across every "
                     "runtime × batch size")
    return lines


def _rounds(report: BenchReport) -> int:
    return max(len(r.rounds_ms) for r in report.results)


def render_text(report: BenchReport) -> str:
    """A fixed-width table plus cold start, parity, skips, errors and warnings."""
    ref = report.reference
    rows = [_header(report)] + [_row(r) for r in report.results]
    table = fixed_width(rows, {0, 1})
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


def _speedup(value: float | None) -> str:
    return "unknown (no PyTorch fp32 row)" if value is None else f"{value:.2f}x"


def _figure(choice: dict) -> str:
    """The pick's figure with its 95 % interval: ``4.89 ms (95% CI 4.85–4.95)``."""
    one = ms if choice["unit"] == "ms" else (lambda v: f"{v:.1f}")
    interval = f" (95% CI {ci(choice['ci95'], one)})" if choice.get("ci95") else ""
    return f"{one(choice['value'])} {choice['unit']}{interval}"


def _serving(choice: dict) -> str:
    """A capacity pick's evidence: the serving configuration, its p99, and the failed probe just above."""
    d = choice.get("detail")
    if not d:
        return ""
    above = d.get("probe_above") or {}
    probe = (f"; {above['target_qps']:g} QPS failed (p99 {ms(above.get('p99_ms'))} ms"
             f"{', INVALID' if not above.get('valid') else ''})" if above.get("target_qps") else "")
    return f" (LoadGen Server VALID at p99 {ms(d.get('server_p99_ms'))} ms; {config_text(d.get('config'))}{probe})"


def _first_clause(reason: str) -> str:
    """``TensorRT is not installed (No module named ...); install ...`` → ``TensorRT is not installed``: the verdict
    stays short, the full reason is in the report's skips."""
    return reason.split(";")[0].split(" (")[0].strip()


def verdict_lines(rec: dict, bullet: str = "- ", markdown: bool = True) -> list[str]:
    """The recommendation (deploy/verdict.py's dict): the pick per objective, what was excluded or not measured.
    The terminal version (``markdown=False``) leaves out the eligibility rule and what was not measured."""
    strong = (lambda s: f"**{s}**") if markdown else (lambda s: s)
    code = (lambda s: f"`{s}`") if markdown else (lambda s: s)
    lines = []
    titles = [("latency", "Lowest latency"), ("throughput", "Highest throughput")]
    if "capacity" in rec:
        titles.append(("capacity", "Most requests per second under the latency SLO"))
    for objective, title in titles:
        c = rec[objective]
        if c is None:
            lines.append(f"{bullet}{strong(title)}: nothing to recommend: {rec['unmet'][objective]}.")
            continue
        sha = f" (sha256 {code(c['sha256'][:12] + '…')})" if c.get("sha256") else ""
        model = c["model"].replace("\\", "/").rsplit("/", 1)[-1] if c.get("model") else "-"
        where = f"p99 <= {c['detail']['slo_ms']:g} ms" if c.get("detail") else f"batch {c['batch_size']}"
        line = (f"{bullet}{strong(title)} ({where}): {strong(c['runtime'] + ' ' + c['precision'])}"
                f" — {code(model)}{sha}: {_figure(c)}{_serving(c)}, speedup vs PyTorch fp32 "
                f"{_speedup(c['speedup_vs_torch_fp32'])}, top-1 {c['accuracy_delta_points']:+.2f} points.")
        if c.get("tied_with"):
            line += (f" Tie within measurement noise with {', '.join(c['tied_with'])} (overlapping 95% intervals): "
                     f"chosen for {c['tie_break']}.")
        r = c["runner_up"]
        line += (" No runner-up." if r is None else f" Runner-up: {r['runtime']} {r['precision']} ({_figure(r)}, "
                 f"{_speedup(r['speedup_vs_torch_fp32'])}, top-1 {r['accuracy_delta_points']:+.2f} points).")
        lines.append(line)
    if markdown:
        lines.append(f"{bullet}Eligible: rows that passed parity and lose at most {rec['max_accuracy_drop_points']:.2f}"
                     " top-1 points against PyTorch fp32 (--max-accuracy-drop). Ties: " + rec["tie_rule"] + ".")
    if rec["excluded"]:
        lines.append(f"{bullet}Not eligible: " + "; ".join(f"{e['runtime']} {e['precision']} — {e['reason']}"
                                                          for e in rec["excluded"]) + ".")
    if rec["not_measured"] and markdown:
        lines.append(f"{bullet}Not measured here: " + "; ".join(
            f"{n['runtime']}{' ' + n['precision'] if n['precision'] else ''} — {_first_clause(n['reason'])}"
            for n in rec["not_measured"]) + ". The verdict covers only what ran on this machine.")
    lines += [f"{bullet}Note: {n}." for n in rec["notes"]]
    return lines


_GATE_COLUMNS = ("runtime", "precision", "batch", "status", "calls base/now", "p50 ms base→now", "p50 ratio 95% CI",
                 "img/s base→now", "parity base/now", "top-1 base/now")


def _interval(value: list[float] | None) -> str:
    return "-" if value is None else f"{value[0] - 1:+.1%}…{value[1] - 1:+.1%}"


def _gate_cells(r: dict) -> list[str]:
    def pair(key: str, fmt, sep: str) -> str:
        return sep.join("-" if v is None else fmt(v) for v in (r[f"baseline_{key}"], r[f"current_{key}"]))

    parity = pair("parity_passed", lambda v: "PASS" if v else "FAIL", "/")
    return [r["runtime"], r["precision"], str(r["batch_size"]), r["status"].upper(), pair("iterations", str, "/"),
            pair("p50_ms", ms, "→") + ("" if r["p50_change"] is None else f" ({r['p50_change']:+.1%})"),
            _interval(r.get("p50_ratio_ci95")),
            pair("throughput", lambda v: f"{v:.1f}", "→")
            + ("" if r["throughput_change"] is None else f" ({r['throughput_change']:+.1%})"),
            parity, pair("top1_accuracy", pct, "/")]


def _gate_summary(gate: dict) -> list[str]:
    head = (f"Regression gate: {gate['outcome'].upper()}: {gate['regressed']} of {gate['compared']} row(s) "
            f"regressed, {gate['inconclusive']} inconclusive, against the {gate['baseline']} (allowed: "
            f"{gate['max_slowdown']:.1%} slower, {gate['max_accuracy_drop_points']:.2f} top-1 points)")
    if not gate["compared"]:
        head += "; no row in common: nothing was compared"
    env = gate["environment_changes"]
    lines = [head, ("Environment differs from the baseline: " + "; ".join(env)) if env else
             "Environment: same CPU, GPU, library versions and threads as the baseline"]
    lines += [f"Only in the baseline (not compared): {', '.join(gate['only_in_baseline'])}"] * bool(
        gate["only_in_baseline"])
    lines += [f"Only in this run (not compared): {', '.join(gate['only_in_current'])}"] * bool(gate["only_in_current"])
    return lines


def gate_text(gate: dict) -> str:
    """The gate for the terminal: a summary, every compared row (regressions in capitals), then each row's why."""
    rows = [list(_GATE_COLUMNS)] + [_gate_cells(r) for r in gate["rows"]]
    table = fixed_width(rows, set(range(len(_GATE_COLUMNS)))) if gate["rows"] else []
    why = [f"  {r['status']} {r['label']}: {'; '.join(r['reasons'])}"
           for r in gate["rows"] if r["reasons"]]
    return "\n".join(_gate_summary(gate) + table + why)


def gate_failure(gate: dict) -> str:
    """The one error line of a gate that did not pass, naming every regressed (or else undecided) row."""
    if gate["outcome"] == "fail":
        return "regression against the baseline: " + ", ".join(
            r["label"] for r in gate["rows"] if r["status"] == "regressed")
    return "inconclusive against the baseline (neither within nor beyond the allowed slowdown with 95 % " \
           "confidence): " + ", ".join(_undecided(r) for r in gate["rows"] if r["status"] == "inconclusive")


def _undecided(r: dict) -> str:
    seconds = r.get("seconds_to_decide")
    return r["label"] + (f" (--duration {max(1, math.ceil(seconds))} would decide it)" if seconds else "")


def gate_markdown(gate: dict) -> list[str]:
    """The gate as a Markdown section (report.md, bench --markdown)."""
    lines = ["", "## Regression gate", ""] + [f"- {line}" for line in _gate_summary(gate)]
    if gate["rows"]:
        lines += ["", "| " + " | ".join(_GATE_COLUMNS) + " | why |", "|" + "---|" * (len(_GATE_COLUMNS) + 1)]
        lines += ["| " + " | ".join(_gate_cells(r) + ["; ".join(r["reasons"]) or "-"]) + " |" for r in gate["rows"]]
    lines += ["", "A row regressed when the whole 95 % interval of its p50 ratio (current ÷ baseline) or of its "
              "throughput ratio (baseline ÷ current) lies above 1 + the allowed slowdown, when its parity passed "
              "before and fails now, or when its top-1 fell by more than the budget; it is ok when both intervals lie "
              "at or below the allowance, and inconclusive when one straddles it. Intervals: " + gate["method"] + "."]
    return lines
