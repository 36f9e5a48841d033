"""The pipeline's stages, each with explicit arguments: each records its results (or its failure) in the record."""
from __future__ import annotations

import csv
import dataclasses
import logging
import time
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from core.errors import ToolkitError
from core.fileio import SetAside, sha256_file, write_json_atomic, write_text_atomic
from deploy.bench.bench import BenchJob, BenchPlan, run_benches
from deploy.bench.gate import compare
from deploy.models import TorchModel
from deploy.pipeline.report import PipelineRecord, render_markdown
from deploy.bench.reports import BenchReport, json_safe
from deploy.progress import Progress
from runtimes.options import RuntimeOptions
from trainer.config import TrainConfig

log = logging.getLogger(__name__)
REPORT_DIR = "report"


def check_training_inputs(config: TrainConfig) -> None:
    """Every training setting and the data folder, checked before the pipeline moves or writes anything.

    Raises:
        UsageError: a setting out of range. DataError: the data cannot be trained on.
    """
    from trainer.run import load_split

    config.validate()
    load_split(config, show_progress=False)


class TrainingFailed(Exception):
    """Training failed (recorded in the report): the later stages have nothing trustworthy to export."""


def train_stage(config: TrainConfig, record: PipelineRecord, show_progress: bool,
                aside: SetAside) -> Mapping[str, Any]:
    """Train into OUT/train and record the summary; returns the checkpoint's metadata.

    A failure or Ctrl-C before the first finished epoch puts an earlier run (``aside``) back and raises the error
    (TrainingInterrupted for Ctrl-C): no report is written over it. Later, what training left is summarized, then
    Ctrl-C is re-raised as KeyboardInterrupt and a failure as TrainingFailed (both recorded in the report).
    """
    from trainer.errors import TrainingInterrupted
    from trainer.run import train

    record.stage = f"train → {record.out / 'train'}"
    log.info("[pipeline 1/5] %s", record.stage)
    started = time.perf_counter()
    try:
        result = train(dataclasses.replace(config, out=str(record.out / "train"), overwrite=False),
                       show_progress=show_progress)
    except (ToolkitError, KeyboardInterrupt) as e:
        record.timings_s["train"] = time.perf_counter() - started
        interrupted = isinstance(e, (KeyboardInterrupt, TrainingInterrupted))
        if not _summarize_partial(record) and aside.moved:
            aside.restore()  # nothing new to show for it: the earlier run stays, untouched
            if isinstance(e, KeyboardInterrupt):
                raise TrainingInterrupted("interrupted before the first epoch finished: the earlier run in "
                                          f"{record.out} is unchanged") from None
            raise
        if interrupted:
            record.notes.append(str(e) or "training interrupted")
            raise KeyboardInterrupt from None
        record.failures.append(f"training: {e}")
        raise TrainingFailed from None
    record.timings_s["train"] = time.perf_counter() - started
    summarize_training(record, result.weights, result.meta, result.history.rows, "trained")
    return result.meta


def summarize_training(record: PipelineRecord, weights: Path, meta: Mapping[str, Any],
                       rows: list[dict[str, float]] | None, source: str) -> None:
    """The training summary (from the checkpoint metadata and history.csv) and the checkpoint's sha256."""
    if rows is None:
        rows = _read_history(Path(weights).parent / "history.csv")
    lr_changes = [{"epoch": i + 1, "lr": rows[i]["lr"]} for i in range(1, len(rows))
                  if rows[i]["lr"] < rows[i - 1]["lr"]]
    best = meta.get("best_epoch")
    record.training = {
        "source": source, "checkpoint": str(weights), "status": meta.get("status"),
        "epochs_run": meta.get("epochs_run", len(rows)), "max_epochs": (meta.get("config") or {}).get("epochs"),
        "stop_reason": meta.get("stop_reason") or "", "early_stopped": meta.get("stopped_by") == "early_stopping",
        "best_epoch": None if best is None else best + 1, "weights_from": meta.get("weights_from"),
        "best_metrics": meta.get("metrics") or {}, "final_metrics": meta.get("final_metrics") or {},
        "lr_reductions": meta.get("lr_reductions", len(lr_changes)), "lr_changes": lr_changes,
        "data": meta.get("data") or {}, "history": rows}
    record.artifacts = [a for a in record.artifacts if a["kind"] != "checkpoint"]
    record.artifacts.insert(0, _artifact("checkpoint", None, weights))


def _summarize_partial(record: PipelineRecord) -> bool:
    """After a failed or interrupted training, describe what it left (its last finished epoch); False if nothing."""
    from trainer.checkpoint import load_checkpoint
    from trainer.errors import CheckpointError

    try:
        ckpt = load_checkpoint(record.out / "train")
    except CheckpointError:
        return False
    summarize_training(record, ckpt.path, ckpt.meta, None, "trained")
    return True


def _read_history(path: Path) -> list[dict[str, float]]:
    if not path.is_file():
        log.info("no %s: the training plot is skipped", path)
        return []
    with open(path, newline="") as f:
        return [{k: float(v) for k, v in row.items() if k != "epoch"} for row in csv.DictReader(f)]


def _artifact(kind: str, precision: str | None, path: Path, lrn: str | None = None) -> dict[str, Any]:
    path = Path(path)
    return {"kind": kind, "precision": precision, "lrn": lrn, "path": str(path), "sha256": sha256_file(path),
            "size_bytes": path.stat().st_size}


def onnx_name(precision: str, lrn: str) -> str:
    """OUT/onnx/model.<precision>.onnx for the default (conv) LRN form, model.<precision>.native-lrn.onnx else."""
    return f"model.{precision}.onnx" if lrn == "conv" else f"model.{precision}.{lrn}-lrn.onnx"


def export_stage(checkpoint: Path, record: PipelineRecord, precision: str, lrn: str, *, calibration_images: int,
                 parity_images: int, progress: Callable[[str], None] | None) -> Path | None:
    """Export one (precision, LRN form) into OUT/onnx; returns the file, or None (the failure is recorded)."""
    from export.errors import ExportError, ParityError
    from export.exporter import export_onnx
    from export.spec import ExportSpec

    path = record.out / "onnx" / onnx_name(precision, lrn)
    key = precision if lrn == "conv" else f"{precision}_{lrn}_lrn"
    started = time.perf_counter()
    try:
        result = export_onnx(checkpoint, path, ExportSpec(precision=precision, lrn=lrn),
                             calibration_images=calibration_images, parity_images=parity_images, keep_failed=True,
                             progress=progress)
    except (ParityError, ExportError) as e:
        seconds = record.timings_s[f"export_{key}"] = time.perf_counter() - started
        failed = path.with_name(f"{path.stem}.failed.onnx")
        record.exports[key] = {
            "status": "failed", "error": str(e), "seconds": seconds,
            "parity": [r.to_dict() for r in getattr(e, "reports", ())], "accuracy": getattr(e, "accuracy", None),
            "failed_file": str(failed) if isinstance(e, ParityError) and failed.is_file() else None}
        record.failures.append(f"export {key}: {e}")
        log.error("export %s failed: %s", key, e)
        return None
    seconds = record.timings_s[f"export_{key}"] = time.perf_counter() - started
    record.exports[key] = {"status": "passed", "seconds": seconds, **result.to_dict()}
    record.artifacts.append({"kind": "onnx", "precision": precision, "lrn": lrn, "path": str(result.path),
                             "sha256": result.sha256, "size_bytes": result.size_bytes})
    return result.path


def bench_stage(groups: Sequence[tuple[Path, str, str, list[str]]], torch_model: TorchModel, plan: BenchPlan,
                record: PipelineRecord, progress: Progress | None) -> list[bool]:
    """Bench every group (file, precision, LRN form, runtimes) in one interleaved measurement (parity on random
    inputs; task parity covers the images); returns, per group, whether any of its runtimes ran."""
    jobs = [BenchJob(path, tuple(names), "bf16" if precision == "bf16" else None)
            for path, precision, _, names in groups]
    started = time.perf_counter()
    try:
        reports = run_benches(jobs, plan, reference=torch_model.path, progress=progress, raise_job_errors=False)
    finally:
        record.timings_s["bench"] = time.perf_counter() - started
    ran = [_record_bench(report, precision, lrn, names, record)
           for report, (_, precision, lrn, names) in zip(reports, groups)]
    if any(r.interrupted for r in reports):
        raise KeyboardInterrupt
    return ran


def _record_bench(report: BenchReport, precision: str, lrn: str, names: list[str], record: PipelineRecord) -> bool:
    """One file's bench report into the pipeline's record (and its bench.<label>.json)."""
    label = precision if lrn == "conv" else f"{precision}_{lrn}_lrn"  # bench.<label>.json
    if report.failure:
        record.failures.append(f"bench {label}: {report.failure}")
        return False
    record.environment = record.environment or report.environment
    bench_file = record.out / REPORT_DIR / f"bench.{label}.json"
    write_json_atomic(bench_file, report.to_dict())
    record.bench_files[label] = bench_file.name
    record.results.extend(report.results)
    for name in names:
        if name in report.skipped:
            record.skip(name, precision, report.skipped[name])
        elif name in report.errors:
            record.runtimes[name] = {"status": "failed", "reason": f"{precision}: {report.errors[name]}"}
            record.failures.append(f"{name} {precision}: {report.errors[name]}")
        elif record.runtimes.get(name, {}).get("status") != "failed":
            record.runtimes[name] = {"status": "ran", "reason": ""}
    for name, parity in report.parity.items():
        record.failures += [f"parity {name} {precision}: {c}" for c in parity.checks if not c.passed]
    for described in report.runtimes.values():
        engine = described.get("engine_path")
        if engine and Path(engine).is_file():
            record.artifacts.append(_artifact("engine", precision, Path(engine)))
    record.notes += [n for n in report.notes if n not in record.notes]
    return bool(report.results)


def task_parity_stage(torch_model: TorchModel, meta: Mapping[str, Any], targets: Sequence[tuple[str, str, Path]],
                      options: RuntimeOptions, batch_sizes: tuple[int, ...], task_images: int | None,
                      record: PipelineRecord) -> None:
    """Every benched (runtime, precision, file) on the validation images: top-1, agreement and Δ vs PyTorch fp32
    (``meta``: the checkpoint's metadata, which records its validation split)."""
    from deploy.task_parity import evaluate_runtime, load_task_images, reference_logits

    started = time.perf_counter()
    try:
        images, note = load_task_images(meta, task_images)
        if images is None:
            record.notes.append(f"task parity skipped: {note}")
            return
        record.task_source = images.source
        try:
            reference = reference_logits(torch_model, targets[0][2], images, options, max(batch_sizes))
        except ToolkitError as e:
            record.failures.append(f"task parity: the PyTorch reference failed: {e}")
            return
        for name, precision, path in targets:
            if (name, precision) in record.task or not record.ran(name, precision):
                continue
            run_options = dataclasses.replace(options, precision="bf16" if precision == "bf16" else None)
            try:
                result = evaluate_runtime(name, path, torch_model, images, reference, run_options, batch_sizes)
            except ToolkitError as e:
                record.failures.append(f"task parity {name} {precision}: {e}")
                continue
            record.task[(name, precision)] = result
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
    if record.baseline is not None:  # judged on every write: the report on disk always holds the current verdict
        record.gate = compare(record.baseline, report, record.settings["max_slowdown"],
                              record.settings["max_accuracy_drop"]).to_dict()
        report["gate"] = json_safe(record.gate)  # as to_dict() writes it
    write_json_atomic(report_dir / "report.json", report)
    write_text_atomic(report_dir / "report.md", render_markdown(report))


def _plots(record: PipelineRecord, report_dir: Path) -> None:
    from deploy.pipeline import plots

    t = record.training
    jobs: dict[str, Callable[[Path], None]] = {}
    if t.get("history"):
        jobs["training"] = lambda p: plots.plot_training(p, t["history"], t["best_epoch"], t["early_stopped"],
                                                         t["lr_changes"])
    report = record.to_dict()  # its rows and recommendation
    if record.results:
        batch = min(r.batch_size for r in record.results)
        samples = {f"{r.runtime} {r.precision}": r.samples_ms for r in record.results
                   if r.batch_size == batch and r.samples_ms}
        jobs["latency"] = lambda p: plots.plot_latency(p, samples, batch)
        jobs["throughput"] = lambda p: plots.plot_throughput(p, report["rows"])
    if any(r["top1_accuracy"] is not None for r in report["rows"]):
        jobs["choice"] = lambda p: plots.plot_choice(p, report["rows"], report["recommendation"])
    for name, plot in jobs.items():
        path = report_dir / f"{name}.png"
        try:
            plot(path)
        except (OSError, ValueError, RuntimeError) as e:  # a plot is a convenience: never lose the report over it
            record.notes.append(f"{name}.png not written: {e}")
            continue
        record.plots[name] = path.name
