"""The pipeline's stages after training: each records its results (or its failure) in the PipelineRecord."""
from __future__ import annotations

import csv
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping

from runtimes.bench import Progress
from runtimes.pipeline_report import PipelineRecord, render_markdown
from trainer.errors import ToolkitError
from trainer.fileio import sha256_file, write_json_atomic, write_text_atomic

if TYPE_CHECKING:
    from runtimes.pipeline import PipelineConfig

log = logging.getLogger(__name__)
REPORT_DIR = "report"


def summarize_training(record: PipelineRecord, weights: Path, meta: Mapping[str, Any],
                       rows: list[dict[str, float]] | None, source: str) -> None:
    """The training summary (from the checkpoint metadata and history.csv) and the checkpoint's sha256."""
    if rows is None:
        rows = _read_history(Path(weights).parent / "history.csv")
    lr_changes = [{"epoch": i + 1, "lr": rows[i]["lr"]} for i in range(1, len(rows))
                  if rows[i]["lr"] < rows[i - 1]["lr"]]
    best = meta.get("best_epoch")
    stop_reason = meta.get("stop_reason") or ""
    record.training = {
        "source": source, "checkpoint": str(weights), "status": meta.get("status"),
        "epochs_run": meta.get("epochs_run", len(rows)), "max_epochs": (meta.get("config") or {}).get("epochs"),
        "stop_reason": stop_reason, "early_stopped": stop_reason.startswith("early stopping"),
        "best_epoch": None if best is None else best + 1, "weights_from": meta.get("weights_from"),
        "best_metrics": meta.get("metrics") or {}, "final_metrics": meta.get("final_metrics") or {},
        "lr_reductions": meta.get("lr_reductions", len(lr_changes)), "lr_changes": lr_changes,
        "data": meta.get("data") or {}, "history": rows}
    record.artifacts = [a for a in record.artifacts if a["kind"] != "checkpoint"]
    record.artifacts.insert(0, _artifact("checkpoint", None, weights))


def _read_history(path: Path) -> list[dict[str, float]]:
    if not path.is_file():
        log.info("no %s: the training plot is skipped", path)
        return []
    with open(path, newline="") as f:
        return [{k: float(v) for k, v in row.items() if k != "epoch"} for row in csv.DictReader(f)]


def _artifact(kind: str, precision: str | None, path: Path) -> dict[str, Any]:
    path = Path(path)
    return {"kind": kind, "precision": precision, "path": str(path), "sha256": sha256_file(path),
            "size_bytes": path.stat().st_size}


def export_precision(precision: str, checkpoint: Path, config: "PipelineConfig", record: PipelineRecord,
                     progress: Callable[[str], None] | None) -> Path | None:
    """Export one precision to OUT/onnx/model.<precision>.onnx; returns the file, or None (failure recorded)."""
    from export.errors import ExportError, ParityError
    from export.exporter import export_onnx
    from export.spec import ExportSpec

    path = record.out / "onnx" / f"model.{precision}.onnx"
    started = time.perf_counter()
    try:
        result = export_onnx(checkpoint, path, ExportSpec(precision=precision),
                             calibration_images=config.calibration_images,
                             parity_images=config.export_parity_images, keep_failed=True, progress=progress)
    except (ParityError, ExportError) as e:
        seconds = time.perf_counter() - started
        record.timings_s[f"export_{precision}"] = seconds
        failed = path.with_name(f"{path.stem}.failed.onnx")
        record.exports[precision] = {
            "status": "failed", "error": str(e), "seconds": seconds,
            "parity": [r.to_dict() for r in getattr(e, "reports", ())], "accuracy": getattr(e, "accuracy", None),
            "failed_file": str(failed) if isinstance(e, ParityError) and failed.is_file() else None}
        record.failures.append(f"export {precision}: {e}")
        path.unlink(missing_ok=True)  # an earlier run's file must not pass for this run's result
        log.error("export %s failed: %s", precision, e)
        return None
    seconds = record.timings_s[f"export_{precision}"] = time.perf_counter() - started
    record.exports[precision] = {"status": "passed", "seconds": seconds, **result.to_dict()}
    record.artifacts.append({"kind": "onnx", "precision": precision, "path": str(result.path),
                             "sha256": result.sha256, "size_bytes": result.size_bytes})
    return result.path


def bench_precision(precision: str, onnx_path: Path, names: list[str], checkpoint: Path, config: "PipelineConfig",
                    record: PipelineRecord, progress: Progress | None) -> None:
    """Bench one exported file on ``names`` (parity on random inputs; task parity covers the images)."""
    from runtimes.suite import SuiteConfig, run_bench

    suite = SuiteConfig(runtimes=tuple(names), batch_sizes=config.batch_sizes, bench=config.bench,
                        options=config.options, skip_unavailable=True, parity_samples=config.parity_samples,
                        parity_images=0)
    started = time.perf_counter()
    try:
        report = run_bench(onnx_path, suite, reference=checkpoint, progress=progress)
    except ToolkitError as e:
        record.failures.append(f"bench {precision}: {e}")
        return
    finally:
        record.timings_s[f"bench_{precision}"] = time.perf_counter() - started
    record.environment = record.environment or report.environment
    bench_file = record.out / REPORT_DIR / f"bench.{precision}.json"
    write_json_atomic(bench_file, report.to_dict())
    record.bench_files[precision] = bench_file.name
    record.results.extend(report.results)
    for name in names:
        if name in report.skipped:
            record.runtimes[name] = {"status": "skipped", "reason": report.skipped[name]}
        elif name in report.errors:
            record.runtimes[name] = {"status": "failed", "reason": f"{precision}: {report.errors[name]}"}
            record.failures.append(f"{name} {precision}: {report.errors[name]}")
        elif name not in record.runtimes:
            record.runtimes[name] = {"status": "ran", "reason": ""}
    for name, parity in report.parity.items():
        record.failures += [f"parity {name} {precision}: {c}" for c in parity.checks if not c.passed]
    for name, described in report.runtimes.items():
        engine = described.get("engine_path")
        if engine and Path(engine).is_file():
            record.artifacts.append(_artifact("engine", precision, Path(engine)))
    record.notes += [n for n in report.notes if n not in record.notes]
    if report.interrupted:
        raise KeyboardInterrupt


def task_parity_stage(checkpoint: Path, meta: Mapping[str, Any], exported: dict[str, Path],
                      config: "PipelineConfig", record: PipelineRecord) -> None:
    """Every benched runtime × precision on the validation images: top-1, agreement and Δ vs PyTorch fp32."""
    from runtimes.task_parity import evaluate_runtime, load_task_images, reference_logits

    started = time.perf_counter()
    try:
        images = load_task_images(dict(meta), list(meta["class_names"]), config.task_images)
        if images is None:
            record.notes.append("task parity skipped: the checkpoint's validation images are not available "
                                f"(data folder {(meta.get('data') or {}).get('path')})")
            return
        record.task_source = images.source
        first = next(iter(exported.values()))
        try:
            reference = reference_logits(checkpoint, first, images, config.options, max(config.batch_sizes))
        except ToolkitError as e:
            record.failures.append(f"task parity: the PyTorch reference failed: {e}")
            return
        targets = list(dict.fromkeys((r.runtime, r.precision) for r in record.results))
        for name, precision in targets:
            try:
                result = evaluate_runtime(name, exported.get(precision, first), checkpoint, images, reference,
                                          config.options, config.batch_sizes)
            except ToolkitError as e:
                record.failures.append(f"task parity {name} {precision}: {e}")
                continue
            record.task[(name, result.precision)] = result
            record.failures += [f"task parity {name} {precision}: {f}" for f in result.failures()]
    finally:
        record.timings_s["task_parity"] = time.perf_counter() - started


def finish(record: PipelineRecord, started: float) -> Path:
    """Write report.json and report.md, then the plots, then the report again with the plots in it.

    The first write comes before any plotting, so even a second Ctrl-C leaves a complete report.
    """
    report_dir = record.out / REPORT_DIR
    _write_report(record, report_dir, started)
    t = time.perf_counter()
    _plots(record, report_dir)
    record.timings_s["plots"] = time.perf_counter() - t
    _write_report(record, report_dir, started)
    log.info("report: %s", report_dir / "report.md")
    return report_dir


def _write_report(record: PipelineRecord, report_dir: Path, started: float) -> None:
    record.timings_s.pop("total", None)  # re-added last, so the table ends with it
    record.timings_s["total"] = time.perf_counter() - started
    report = record.to_dict()
    write_json_atomic(report_dir / "report.json", report)
    write_text_atomic(report_dir / "report.md", render_markdown(report))


def _plots(record: PipelineRecord, report_dir: Path) -> None:
    from runtimes import plots

    t = record.training
    jobs: dict[str, Callable[[Path], None]] = {}
    if t.get("history"):
        jobs["training"] = lambda p: plots.plot_training(p, t["history"], t["best_epoch"], t["early_stopped"],
                                                         t["lr_changes"])
    if record.results:
        batch = min(r.batch_size for r in record.results)
        samples = {f"{r.runtime} {r.precision}": r.samples_ms for r in record.results
                   if r.batch_size == batch and r.samples_ms}
        jobs["latency"] = lambda p: plots.plot_latency(p, samples, batch)
        jobs["throughput"] = lambda p: plots.plot_throughput(p, record.rows())
    for name, plot in jobs.items():
        path = report_dir / f"{name}.png"
        try:
            plot(path)
        except (OSError, ValueError, RuntimeError) as e:  # a plot is a convenience: never lose the report over it
            record.notes.append(f"{name}.png not written: {e}")
            continue
        record.plots[name] = path.name
