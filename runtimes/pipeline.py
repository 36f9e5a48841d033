"""run_pipeline: train → export (each precision) → bench + task parity on every runtime → one report folder."""
from __future__ import annotations

import dataclasses
import logging
import shutil
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Callable

from export.spec import PRECISIONS
from runtimes.bench import BenchConfig, Progress
from runtimes.factory import RuntimeOptions
from runtimes.pipeline_report import PipelineRecord
from runtimes.pipeline_stages import (REPORT_DIR, bench_precision, export_precision, finish, summarize_training,
                                      task_parity_stage)
from runtimes.registry import RUNTIME_NAMES, availability
from trainer.config import TrainConfig
from trainer.errors import DataError, ToolkitError

log = logging.getLogger(__name__)
STAGES = ("train", "export", "bench", "task parity", "report")


@dataclass(frozen=True)
class PipelineConfig:
    """What the pipeline runs. Defaults keep `make demo` (15 training epochs on 2 CPU cores) under 10 minutes."""
    train: TrainConfig = field(default_factory=TrainConfig)   # ignored when ``checkpoint`` is given
    checkpoint: str | None = None          # an existing run folder or .safetensors: skip training
    out: str | None = None                 # the pipeline folder; None = runs/<timestamp>
    runtimes: tuple[str, ...] = RUNTIME_NAMES  # unavailable ones are reported as skipped
    precisions: tuple[str, ...] = PRECISIONS
    batch_sizes: tuple[int, ...] = (1, 32)  # single-image latency and a throughput batch
    # 0.3 s warm-up + 1 s per point: ~18 s of measurement for torch + ONNX Runtime × 3 precisions × 2 batch sizes.
    bench: BenchConfig = field(default_factory=lambda: BenchConfig(warmup_iters=2, warmup_s=0.3, duration_s=1.0))
    options: RuntimeOptions = field(default_factory=RuntimeOptions)
    parity_samples: int = 16               # bench: fixed-seed random inputs per runtime
    export_parity_images: int = 64         # export's own gate; task parity then checks every validation image
    calibration_images: int = 128          # int8 calibration
    task_images: int | None = None         # validation images for task parity; None = all of them
    overwrite: bool = False                # replace an earlier pipeline run in ``out``; otherwise it is refused


@dataclass(frozen=True)
class PipelineProgress:
    """Progress displays, from the CLI: the trainer's bars, export step lines and the bench's bars."""
    show_progress: bool = False
    export: Callable[[str], None] | None = None
    bench: Progress | None = None


@dataclass(frozen=True)
class PipelineResult:
    out: Path
    report_dir: Path
    report: dict[str, Any]               # the report.json content
    failures: tuple[str, ...]            # what the user asked for and did not get (export, parity, runtime errors)
    skipped: dict[str, str]              # runtime → why it could not run here
    interrupted: bool
    no_runtime: bool                     # none of the requested runtimes can run on this machine

    @property
    def passed(self) -> bool:
        return not self.failures and not self.interrupted and not self.no_runtime


def run_pipeline(config: PipelineConfig, progress: PipelineProgress = PipelineProgress()) -> PipelineResult:
    """Train (or take ``config.checkpoint``), export every precision, bench and check it, and write the report.

    The report (``OUT/report/report.{json,md}`` and the plots) is always written, whatever failed or was
    interrupted; each failure is recorded with its reason and the remaining stages still run where they can.

    Raises:
        CheckpointError: ``config.checkpoint`` is missing or not a checkpoint (nothing has been written yet).
        DataError: the ``--data`` folder does not exist (nothing has been written yet).
        OutputExistsError: ``out`` holds an earlier pipeline run and ``config.overwrite`` is off.
        ValueError: an unknown precision or runtime name (a programming error; the CLI validates its flags).
    """
    from trainer.checkpoint import load_checkpoint

    unknown = sorted(set(config.precisions) - set(PRECISIONS)) + sorted(set(config.runtimes) - set(RUNTIME_NAMES))
    if unknown:
        raise ValueError(f"unknown precision or runtime: {', '.join(unknown)}")
    given = load_checkpoint(config.checkpoint) if config.checkpoint else None  # fail before writing anything
    if given is None and config.train.data and not Path(config.train.data).is_dir():
        raise DataError(f"data folder not found: {config.train.data}")  # a typo, not a stage that failed
    start = time.perf_counter()
    out = Path(config.out or f"runs/{datetime.now():%Y%m%d-%H%M%S}")
    _claim_folder(out, config.overwrite)
    record = PipelineRecord(out, _settings(config))
    runnable = _check_runtimes(config.runtimes, record)
    try:
        if runnable:
            _run_stages(config, given, runnable, record, progress)
        else:
            record.no_runtime = True
            log.error("none of the requested runtimes (%s) can run here", ", ".join(config.runtimes))
    except KeyboardInterrupt:
        record.interrupted = True
        log.warning("interrupted during %s: writing the report with what finished", record.stage)
    log.info("[pipeline %d/%d] report → %s", len(STAGES), len(STAGES), out / "report")
    report_dir = finish(record, start)
    skipped = {n: v["reason"] for n, v in record.runtimes.items() if v["status"] == "skipped"}
    return PipelineResult(out, report_dir, record.to_dict(), tuple(record.failures), skipped, record.interrupted,
                          record.no_runtime)


def _run_stages(config: PipelineConfig, given, runnable: list[str], record: PipelineRecord,
                progress: PipelineProgress) -> None:
    from trainer.run import TrainingInterrupted

    try:
        checkpoint, meta = _train(config, given, record, progress)
    except TrainingInterrupted as e:
        record.notes.append(str(e))
        raise KeyboardInterrupt from None
    except ToolkitError as e:  # bad data, divergence: nothing to export
        record.failures.append(f"training: {e}")
        return
    exported: dict[str, Path] = {}
    for precision in config.precisions:
        _stage(record, 2, f"export {precision}")
        path = export_precision(precision, checkpoint, config, record, progress.export)
        if path is not None:
            exported[precision] = path
    torch_done = False
    for precision, path in exported.items():
        _stage(record, 3, f"bench {precision}")
        # The torch runtime runs the checkpoint, not the ONNX file: bench it once, next to the first export.
        names = [n for n in runnable if n != "torch" or not torch_done]
        bench_precision(precision, path, names, checkpoint, config, record, progress.bench)
        torch_done = torch_done or "torch" in names
    if exported:
        _stage(record, 4, "task parity on the validation images")
        task_parity_stage(checkpoint, meta, exported, config, record)
    if exported and not record.results and all(v["status"] == "skipped" for v in record.runtimes.values()):
        record.no_runtime = True  # available on paper, but every one of them turned out unable to run here


def _train(config: PipelineConfig, given, record: PipelineRecord,
           progress: PipelineProgress) -> tuple[Path, dict[str, Any]]:
    """Train into OUT/train, or take the given checkpoint; records the training summary.

    Returns:
        The weights file and its metadata.
    """
    if given is not None:
        _stage(record, 1, f"train: skipped, using {given.path}")
        summarize_training(record, given.path, given.meta, None, "checkpoint")
        return given.path, given.meta
    from trainer.run import train

    _stage(record, 1, f"train → {record.out / 'train'}")
    train_config = dataclasses.replace(config.train, out=str(record.out / "train"), overwrite=config.overwrite)
    started, wall = time.perf_counter(), time.time()
    try:
        result = train(train_config, show_progress=progress.show_progress)
    except BaseException:  # Ctrl-C, bad data, divergence: describe what training left, then let the caller decide
        record.timings_s["train"] = time.perf_counter() - started
        _summarize_partial(record, wall)
        raise
    record.timings_s["train"] = time.perf_counter() - started
    summarize_training(record, result.weights, result.meta, result.history.rows, "trained")
    return result.weights, result.meta


def _summarize_partial(record: PipelineRecord, started: float) -> None:
    """After a failed or interrupted training, describe what it left (the last finished epoch), if anything."""
    from trainer.checkpoint import WEIGHTS_NAME, load_checkpoint
    from trainer.errors import CheckpointError

    run_dir = record.out / "train"
    weights = run_dir / WEIGHTS_NAME
    if not weights.is_file() or weights.stat().st_mtime < started:  # nothing, or an earlier run's model
        return
    try:
        ckpt = load_checkpoint(run_dir)
    except CheckpointError:
        return
    summarize_training(record, ckpt.path, ckpt.meta, None, "trained")


def _claim_folder(out: Path, overwrite: bool) -> None:
    """Refuse a folder holding an earlier pipeline run, or with ``overwrite`` clear its onnx/ and report/ (the
    trainer replaces train/ itself, and a --checkpoint inside train/ must survive)."""
    from trainer.checkpoint import WEIGHTS_NAME
    from trainer.errors import OutputExistsError

    earlier = [p for p in (out / "train" / WEIGHTS_NAME, out / "onnx", out / REPORT_DIR) if p.exists()]
    if not earlier:
        return
    if not overwrite:
        raise OutputExistsError(f"{out} already holds a pipeline run ({', '.join(str(p) for p in earlier)}); pick "
                                "another --out or replace it with --overwrite")
    log.warning("--overwrite: replacing the earlier pipeline run in %s", out)
    for folder in (out / "onnx", out / REPORT_DIR):
        shutil.rmtree(folder, ignore_errors=True)


def _stage(record: PipelineRecord, number: int, text: str) -> None:
    record.stage = text
    log.info("[pipeline %d/%d] %s", number, len(STAGES), text)


def _check_runtimes(requested: tuple[str, ...], record: PipelineRecord) -> list[str]:
    """The requested runtimes that can run here; the others are recorded as skipped with the reason."""
    runnable = []
    for name in requested:
        ok, reason = availability(name)
        if ok:
            runnable.append(name)
        else:
            record.runtimes[name] = {"status": "skipped", "reason": reason}
            log.warning("skipping %s: %s", name, reason)
    return runnable


def _settings(config: PipelineConfig) -> dict[str, Any]:
    return {"checkpoint": config.checkpoint, "runtimes": list(config.runtimes),
            "precisions": list(config.precisions), "batch_sizes": list(config.batch_sizes),
            "bench": dataclasses.asdict(config.bench), "runtime_options": dataclasses.asdict(config.options),
            "parity_samples": config.parity_samples, "export_parity_images": config.export_parity_images,
            "calibration_images": config.calibration_images, "task_images": config.task_images,
            "train": None if config.checkpoint else config.train.to_dict()}
