"""The pipeline's record (filled stage by stage) and its report.json / report.md renderings."""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

from core.contract import PRECISIONS
from core.environment import describe_environment
from deploy.bench.render import gate_markdown, verdict_lines
from deploy.bench.stats import METHOD
from deploy.formats import PIPELINE_FORMAT, PIPELINE_FORMAT_VERSION
from deploy.render import fixed_width, ms, pct
from deploy.bench.reports import BenchResult, compact_rounds, interval_list, json_safe
from deploy.bench.verdict import DEFAULT_MAX_ACCURACY_DROP, recommend
from runtimes.registry import RUNTIME_NAMES

if TYPE_CHECKING:  # task_parity pulls in torch and torchvision
    from deploy.task_parity import TaskParity

log = logging.getLogger(__name__)



@dataclass
class PipelineRecord:
    """Everything the pipeline has done so far. Mutable on purpose: each stage adds to it as it finishes, so a
    failure or Ctrl-C in a later stage still leaves every earlier result in the report."""
    out: Path
    settings: dict[str, Any]
    environment: dict[str, Any] = field(default_factory=dict)
    training: dict[str, Any] = field(default_factory=dict)
    artifacts: list[dict[str, Any]] = field(default_factory=list)      # kind, precision, path, sha256, size_bytes
    exports: dict[str, dict[str, Any]] = field(default_factory=dict)    # precision → status, checks, error
    runtimes: dict[str, dict[str, str]] = field(default_factory=dict)   # runtime → status (ran/skipped/failed), reason
    skipped: dict[tuple[str, str], str] = field(default_factory=dict)   # (runtime, precision) → why not, where the
                                                                        # runtime itself runs but not in that precision
    results: list[BenchResult] = field(default_factory=list)            # every bench row, all precisions
    task: dict[tuple[str, str], TaskParity] = field(default_factory=dict)  # (runtime, precision) → task parity
    task_source: str = ""
    bench_files: dict[str, str] = field(default_factory=dict)           # precision → bench JSON
    plots: dict[str, str] = field(default_factory=dict)                 # name → PNG file name
    failures: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    timings_s: dict[str, float] = field(default_factory=dict)
    stage: str = ""                                                     # the stage running (or last run)
    interrupted: bool = False
    no_runtime: bool = False                                            # none of the requested runtimes can run
    baseline: dict[str, Any] | None = field(default=None, repr=False)   # --baseline report (deploy/gate.py)
    gate: dict[str, Any] | None = None                                  # the gate's verdict against it, once judged
    layers: dict[str, dict[str, Any]] = field(default_factory=dict)     # objective → the pick's layer table
    capacity: dict[str, Any] | None = None                              # --slo-ms: capacity.json's answers
    triton: dict[str, Any] | None = None                                # the capacity pick's Triton repository

    def skip(self, runtime: str, precision: str, reason: str) -> None:
        self.skipped[(runtime, precision)] = reason
        log.warning("skipping %s %s: %s", runtime, precision, reason)

    def ran(self, runtime: str, precision: str) -> bool:
        return any(r.runtime == runtime and r.precision == precision for r in self.results)

    @property
    def status(self) -> str:
        if self.interrupted:
            return "interrupted"
        if self.failures:
            return "failed"
        return "unavailable" if self.no_runtime else "passed"

    def rows(self) -> list[dict[str, Any]]:
        """One flat row per runtime × precision × batch size: latency, throughput, parity and task parity."""
        rows = []
        for r in sorted(self.results, key=_order):
            lat = r.latency_ms
            task = self.task.get((r.runtime, r.precision))
            checks = {c.inputs: c.passed for c in r.parity.checks} if r.parity else {}
            if task is not None and task.parity is not None:
                checks["images"] = task.parity.passed
            rows.append({
                "runtime": r.runtime, "precision": r.precision, "batch_size": r.batch_size, "device": r.device,
                "model": r.model,
                "p50_ms": lat.p50 if lat else None, "p99_ms": lat.p99 if lat else None,
                "mean_ms": lat.mean if lat else None, "iterations": lat.samples if lat else 0,
                "cv": lat.cv if lat else None,
                "throughput": r.throughput, "p50_ci95": interval_list(r.p50_ci95),
                "throughput_ci95": interval_list(r.throughput_ci95),
                "parity_passed": all(checks.values()) if checks else None,
                "parity": checks, "task_images": task.images if task else None,
                "top1_accuracy": task.accuracy if task else None, "agreement": task.agreement if task else None,
                "accuracy_delta_points": task.accuracy_delta if task else None,
                "task_passed": task.passed if task else None, "warnings": list(r.warnings),
                "samples_ms": compact_rounds(r.rounds_ms)})
        return rows

    def to_dict(self) -> dict[str, Any]:
        report = json_safe({
            "format": PIPELINE_FORMAT, "format_version": PIPELINE_FORMAT_VERSION, "status": self.status,
            "out": str(self.out),
            "failures": self.failures, "interrupted_during": self.stage if self.interrupted else None,
            "settings": self.settings, "environment": self.environment, "training": self.training,
            "artifacts": self.artifacts, "exports": self.exports, "runtimes": self.runtimes,
            "skipped": [{"runtime": n, "precision": p, "reason": why} for (n, p), why in self.skipped.items()],
            "rows": self.rows(),
            "task_parity": {"source": self.task_source, "results": [t.to_dict() for t in self.task.values()]},
            "bench_files": self.bench_files, "plots": self.plots, "notes": self.notes, "timings_s": self.timings_s,
            "layers": self.layers, "capacity": self.capacity, "triton": self.triton})
        budget = self.settings.get("max_accuracy_drop", DEFAULT_MAX_ACCURACY_DROP)
        head = {k: report[k] for k in ("format", "format_version", "status", "out", "failures", "interrupted_during")}
        # The answer first: what to ship, then (with --baseline) whether this run regressed; the evidence follows.
        return {**head, "recommendation": json_safe(recommend(report, budget).to_dict()), "gate": json_safe(self.gate),
                **report}


def render_markdown(report: dict[str, Any]) -> str:
    """report.md from the report.json content (so the two never disagree)."""
    status = {"passed": "PASS", "failed": "FAIL", "interrupted": "INTERRUPTED", "unavailable": "NO RUNTIME"}
    lines = ["# Deployment report", "", "## Recommendation", ""] + verdict_lines(report["recommendation"])
    if "choice" in report["plots"]:
        lines += ["", f"![top-1 accuracy vs throughput, the picks marked]({report['plots']['choice']})"]
    lines += ["", "## Run", "", f"- Result: **{status[report['status']]}**"
             + (f" (interrupted during {report['interrupted_during']})" if report["interrupted_during"] else ""),
             f"- Folder: `{report['out']}`"]
    if report["environment"]:
        lines.append(f"- Environment: {describe_environment(report['environment'])}")
    if report.get("gate"):
        lines += gate_markdown(report["gate"])
    lines += _training(report["training"], report["plots"])
    lines += _artifacts(report["artifacts"])
    lines += _results(report)
    lines += _capacity(report.get("capacity"), report.get("triton"))
    lines += _layers(report.get("layers") or {})
    lines += _exports(report["exports"])
    problems = [f"- FAILED {f}" for f in report["failures"]]
    problems += [f"- {v['status']} {name}: {v['reason']}" for name, v in report["runtimes"].items()
                 if v["status"] != "ran"]
    problems += [f"- skipped {s['runtime']} {s['precision']}: {s['reason']}" for s in report["skipped"]]
    problems += [f"- note: {n}" for n in report["notes"]]
    if problems:
        lines += ["", "## Failures, skips and notes", ""] + problems
    lines += ["", "## Stage timings", "", "| stage | seconds |", "|---|---:|"]
    lines += [f"| {k} | {v:.1f} |" for k, v in report["timings_s"].items()]
    return "\n".join(lines) + "\n"


def render_text(report: dict[str, Any]) -> str:
    """The results table (fixed width) and every failure and skip, for the terminal."""
    rows = [list(_HEADER)] + [_cells(r) for r in report["rows"]]
    lines = fixed_width(rows, {0, 1, 2, 7}) if report["rows"] else ["(no results)"]
    lines += [f"skipped {n}: {v['reason']}" for n, v in report["runtimes"].items() if v["status"] == "skipped"]
    lines += [f"skipped {s['runtime']} {s['precision']}: {s['reason']}" for s in report["skipped"]]
    lines += ["", "Recommendation:"] + verdict_lines(report["recommendation"], "  ", markdown=False)
    return "\n".join(lines)


def _training(t: dict[str, Any], plots: dict[str, str]) -> list[str]:
    if not t:
        return ["", "## Training", "", "Not run."]
    best = t.get("best_metrics") or {}
    origin = "trained by this pipeline" if t["source"] == "trained" else "given with --checkpoint"
    lines = ["", "## Training", "",
             f"- Checkpoint: `{t['checkpoint']}` ({origin}, status {t.get('status')})",
             f"- Epochs run: {t.get('epochs_run')}" + (f" of {t['max_epochs']}" if t.get("max_epochs") else "")
             + f"; stopped: {t.get('stop_reason') or 'unknown'}",
             f"- Best epoch: {t.get('best_epoch')} (weights from the {t.get('weights_from')})"
             + (f": val_accuracy {best['val_accuracy']:.4f}, val_loss {best['val_loss']:.4f}" if best else ""),
             f"- LR reductions: {t.get('lr_reductions', 0)}"
             + "".join(f"; epoch {c['epoch']} → {c['lr']:.3g}" for c in t.get("lr_changes", []))]
    if t.get("data"):
        d = t["data"]
        lines.append(f"- Data: `{d.get('path')}` ({d.get('source', '')}: {d.get('train_images', '?')} train / "
                     f"{d.get('val_images', '?')} val images)")
    if "training" in plots:
        lines += ["", f"![training curves]({plots['training']})"]
    return lines


def _artifacts(artifacts: list[dict[str, Any]]) -> list[str]:
    lines = ["", "## Artifacts", "", "| kind | precision | LRN | file | MiB | sha256 |", "|---|---|---|---|---:|---|"]
    lines += [f"| {a['kind']} | {a.get('precision') or '-'} | {a.get('lrn') or '-'} | `{a['path']}` | "
              f"{a['size_bytes'] / 2**20:.1f} | `{a['sha256']}` |" for a in artifacts]
    return lines


_HEADER = ("runtime", "precision", "file", "batch", "p50 ms (95% CI)", "p99 ms", "img/s (95% CI)", "parity vs PyTorch",
           "top-1", "agreement", "Δ top-1 (points)")


def _results(report: dict[str, Any]) -> list[str]:
    task = report["task_parity"]
    lines = ["", "## Results", "", "| " + " | ".join(_HEADER) + " |",
             "|---|---|---|---:|---:|---:|---:|---|---:|---:|---:|"]
    lines += ["| " + " | ".join(_cells(r)) + " |" for r in report["rows"]]
    if not report["rows"]:
        lines.append("| (no results) |" + " |" * (len(_HEADER) - 1))
    lines += ["", "Latency is per call (host, end to end) and img/s = batch / mean latency; every runtime × precision "
              "× batch size was timed in the same interleaved rounds, and the intervals are each the "
              f"{METHOD}. Parity compares the logits with the PyTorch fp32 checkpoint on fixed-seed random inputs "
              "(the bench) and on the validation images "
              "(the precision's tolerance). top-1, agreement (same top-1 class as PyTorch fp32) and Δ top-1 are "
              f"task-level, per runtime × precision, measured on {task['source'] or 'no images'}; they do not depend "
              "on the batch size."]
    for name in ("latency", "throughput"):
        if name in report["plots"]:
            lines += ["", f"![{name}]({report['plots'][name]})"]
    return lines


def _order(r: BenchResult) -> tuple[int, int, int]:
    """Rows by runtime (registry order: PyTorch first), then precision (fp32, fp16, int8, bf16), then batch size."""
    return (RUNTIME_NAMES.index(r.runtime) if r.runtime in RUNTIME_NAMES else len(RUNTIME_NAMES),
            PRECISIONS.index(r.precision) if r.precision in PRECISIONS else len(PRECISIONS), r.batch_size)


def _cells(r: dict[str, Any]) -> list[str]:
    parity = "-" if r["parity_passed"] is None else (
        ("PASS" if r["parity_passed"] else "FAIL") + f" ({', '.join(sorted(r['parity']))})")
    if (r["runtime"], r["precision"]) == ("torch", "fp32") and r["parity_passed"]:
        parity = "reference"  # the PyTorch checkpoint itself (the bench only re-checks it is deterministic)
    model = Path(r["model"]).name if r.get("model") else "-"
    return [r["runtime"], r["precision"], model, str(r["batch_size"]), ms(r["p50_ms"]) + _ci(r["p50_ci95"], ms),
            ms(r["p99_ms"]), f"{r['throughput']:.1f}" + _ci(r["throughput_ci95"], lambda v: f"{v:.1f}"), parity,
            pct(r["top1_accuracy"]), pct(r["agreement"]),
            "-" if r["accuracy_delta_points"] is None else f"{r['accuracy_delta_points']:+.2f}"]


def _ci(value: list[float] | None, fmt) -> str:
    return "" if value is None else f" ({fmt(value[0])}–{fmt(value[1])})"


def _capacity(capacity: Mapping[str, Any] | None, triton: Mapping[str, Any] | None) -> list[str]:
    """report.md's capacity section (pipeline --slo-ms): one row per runtime × precision, the pick, the files."""
    if not capacity:
        return []
    from deploy.serving.render import HEADER, recommendation_text, row_cells

    lines = ["", f"## Capacity at p99 <= {capacity['slo_ms']:g} ms", "", recommendation_text(capacity), "",
             "| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    lines += ["| " + " | ".join(c.replace("|", "/") for c in row_cells(r)) + " |" for r in capacity["results"]]
    lines += ["", f"Measured with MLPerf LoadGen ({(capacity.get('loadgen') or {}).get('note', '')}); every run's "
              f"LoadGen logs, the search and the p99-against-QPS plot: [{capacity['file']}]"
              f"(../{capacity['file'].replace('.json', '.md')})."]
    if triton:
        lines.append(f"Triton repository for the pick, batching and instances as measured: `../{triton['repo']}/` "
                     f"({', '.join(triton['models'])}).")
    return lines


def _layers(layers: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """report.md's section: per recommended deployment, its layer parity and layer time tables."""
    from deploy.layers.report import parity_markdown, time_markdown

    if not layers:
        return []
    lines = ["", "## Inside the recommended deployment", ""]
    for objective, table in layers.items():
        lines += [f"### {objective}: {table['runtime']} {table['precision']} at batch {table['batch_size']}", "",
                  f"Layer by layer against PyTorch fp32 on {table['images']} validation images, and where the time "
                  "goes by the runtime's own profiler (deploy/layers; `cli.py inspect` runs every runtime × "
                  "precision).", ""]
        lines += parity_markdown([table["parity"]]) + [""] + time_markdown([table["profile"]])
    return lines


def _exports(exports: dict[str, dict[str, Any]]) -> list[str]:
    if not exports:
        return []
    lines = ["", "## Export checks (ONNX Runtime CPU vs PyTorch, before the file is written)", "",
             "| precision | result | checks | accuracy fp32 → ONNX | seconds |", "|---|---|---|---|---:|"]
    for precision, e in exports.items():
        checks = ", ".join(f"{c['inputs']} n={c['samples']} {'PASS' if c['passed'] else 'FAIL'}"
                           for c in e.get("parity") or [])
        acc = e.get("accuracy")
        acc_text = f"{acc['reference']:.2%} → {acc['onnx']:.2%} ({int(acc['images'])} images)" if acc else "-"
        result = "PASS" if e["status"] == "passed" else f"FAIL: {e.get('error', '')}"
        lines.append(f"| {precision} | {result} | {checks or '-'} | {acc_text} | {e.get('seconds', 0):.1f} |")
    return lines
