"""run_pipeline: train → export (each precision, in each runtime's LRN form) → bench + task parity on every runtime →
one report folder."""
from __future__ import annotations

import dataclasses
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping

from core.contract import PRECISIONS
from core.errors import UsageError
from core.fileio import SetAside, recover_set_aside
from core.paths import default_run_dir
from deploy.pipeline import stages
from deploy.bench.bench import BenchPlan
from deploy.bench.gate import DEFAULT_MAX_SLOWDOWN, load_baseline
from deploy.models import TorchModel, checkpoint_model
from deploy.pipeline.report import PipelineRecord
from deploy.progress import Progress
from deploy.bench.timing import BenchConfig
from deploy.bench.verdict import DEFAULT_MAX_ACCURACY_DROP
from runtimes.options import RuntimeOptions
from runtimes.registry import RUNTIME_NAMES, availability, runtime_class
from trainer.config import TrainConfig

if TYPE_CHECKING:  # LoadGen's plan: imported by the stage that runs it
    from deploy.serving.plan import CapacityPlan

log = logging.getLogger(__name__)
STAGES = ("train", "export", "bench", "task parity", "capacity", "layers", "report")
RUN_ENTRIES = ("train", "onnx", stages.REPORT_DIR, "capacity", "triton")  # what a pipeline run writes into its folder


@dataclass(frozen=True)
class PipelineConfig:
    """What the pipeline runs. Defaults keep `make demo` (15 training epochs on 2 CPU cores) under 10 minutes."""
    train: TrainConfig = field(default_factory=TrainConfig)   # ignored when ``checkpoint`` is given
    checkpoint: str | None = None          # an existing run folder or .safetensors: skip training
    out: str | None = None                 # the pipeline folder; None = runs/<timestamp>
    runtimes: tuple[str, ...] = RUNTIME_NAMES  # unavailable ones are reported as skipped
    precisions: tuple[str, ...] = PRECISIONS
    batch_sizes: tuple[int, ...] = (1, 32)  # single-image latency and a throughput batch
    # 0.3 s warm-up + 1 s per point: ~25 s of measurement for the CPU runtimes × 4 precisions × 2 batch sizes.
    timing: BenchConfig = field(default_factory=lambda: BenchConfig(warmup_iters=2, warmup_s=0.3, duration_s=1.0))
    options: RuntimeOptions = field(default_factory=RuntimeOptions)
    parity_samples: int = 16               # bench: fixed-seed random inputs per runtime
    export_parity_images: int = 64         # export's own gate; task parity then checks every validation image
    calibration_images: int = 128          # int8 calibration
    task_images: int | None = None         # validation images for task parity; None = all of them
    overwrite: bool = False                # replace an earlier pipeline run in ``out``; otherwise it is refused
    # Top-1 points a row may lose vs PyTorch fp32 and still be recommended (deploy/verdict.py); also the gate's
    # allowed top-1 loss vs --baseline.
    max_accuracy_drop: float = DEFAULT_MAX_ACCURACY_DROP
    baseline: str | None = None            # a bench or pipeline report JSON to gate this run against (deploy/gate.py)
    max_slowdown: float = DEFAULT_MAX_SLOWDOWN  # the gate: a row this much slower (fraction) than the baseline fails
    layers: bool = True                    # layer parity and layer time of the recommended deployments (report.md)
    # Capacity at its p99 SLO (MLPerf LoadGen, OUT/capacity/) and a Triton repository for the pick (OUT/triton/); its
    # runtimes, precisions, budget and threads are the pipeline's. None: not measured.
    capacity: CapacityPlan | None = None

    def __post_init__(self) -> None:
        if not (math.isfinite(self.max_accuracy_drop) and 0 <= self.max_accuracy_drop <= 100):
            raise UsageError(f"max_accuracy_drop must be 0..100 top-1 points, got {self.max_accuracy_drop}")
        if not (math.isfinite(self.max_slowdown) and 0 < self.max_slowdown < 10):
            raise UsageError(f"max_slowdown must be a fraction above 0 and below 10, got {self.max_slowdown}")


@dataclass(frozen=True)
class PipelineProgress:
    """Progress displays, from the CLI: the trainer's bars, export step lines and the bench's bars."""
    show_progress: bool = False
    export: Callable[[str], None] | None = None
    bench: Progress | None = None


@dataclass(frozen=True)
class Target:
    """One report row group: a runtime computing in a precision, on an exported file (precision, LRN form)."""
    runtime: str
    precision: str                         # fp32 | fp16 | int8 | bf16 (bf16 runs the fp32 file)
    export: tuple[str, str]                # (export precision, LRN form) of the file it runs


@dataclass(frozen=True)
class PipelineResult:
    out: Path
    report_dir: Path
    report: dict[str, Any]               # the report.json content
    failures: tuple[str, ...]            # what the user asked for and did not get (export, parity, runtime errors)
    skipped: dict[str, str]              # runtime (or runtime precision) → why it could not run here
    interrupted: bool
    no_runtime: bool                     # none of the requested runtimes can run on this machine

    @property
    def passed(self) -> bool:
        return not self.failures and not self.interrupted and not self.no_runtime


def run_pipeline(config: PipelineConfig, progress: PipelineProgress = PipelineProgress()) -> PipelineResult:
    """Train (or take ``config.checkpoint``), export every precision, bench and check it, and write the report.

    The report (``OUT/report/report.{json,md}`` and the plots) is written whatever failed or was interrupted once
    the run has a checkpoint; each failure is recorded with its reason and the remaining stages still run. With
    ``overwrite`` an earlier run in ``out`` is set aside and deleted only once the new run has its checkpoint; a new
    run that fails before that puts it back and raises.

    Raises:
        UsageError: an unknown precision or runtime, or bad training settings (nothing written yet); BaselineError
            (a UsageError) for a ``baseline`` that is not a bench or pipeline report of this format version.
        CheckpointError, DataError: a bad ``checkpoint`` or ``--data`` (nothing written yet).
        OutputExistsError: ``out`` holds an earlier pipeline run and ``config.overwrite`` is off.
        ToolkitError, TrainingInterrupted: training failed or was interrupted before its first epoch (an earlier run
            in ``out`` is back in place).
    """
    unknown = sorted(set(config.precisions) - set(PRECISIONS)) + sorted(set(config.runtimes) - set(RUNTIME_NAMES))
    if unknown:
        raise UsageError(f"unknown precision or runtime: {', '.join(unknown)}")
    from trainer.checkpoint import load_checkpoint

    given = checkpoint_model(config.checkpoint, "--checkpoint") if config.checkpoint else None
    # Read whole (and so checked) before anything is created or moved: a bad file must not cost the earlier run.
    given_meta = load_checkpoint(given.path).meta if given else None
    start = time.perf_counter()
    out = Path(config.out or default_run_dir())
    # Read (and checked) before anything runs or moves: it may be the report this run replaces with --overwrite.
    baseline = load_baseline(config.baseline) if config.baseline else None
    record = PipelineRecord(out, _settings(config), baseline=baseline)
    targets = _targets(config.runtimes, config.precisions, record)
    if given is None and targets:
        stages.check_training_inputs(config.train)  # every setting and the data, before anything is moved
    aside = _claim_folder(out, config.overwrite, keep_train=given is not None)
    for name, status in record.runtimes.items():  # said once the settings and data are known to be good
        log.warning("skipping %s: %s", name, status["reason"])
    for (name, precision), reason in record.skipped.items():
        log.warning("skipping %s %s: %s", name, precision, reason)
    try:
        if targets:
            _run_stages(config, given, given_meta, targets, record, progress, aside)
        else:
            record.no_runtime = True
            log.error("none of the requested runtimes (%s) can run here", ", ".join(config.runtimes))
    except KeyboardInterrupt:
        record.interrupted = True
        log.warning("interrupted during %s: writing the report with what finished", record.stage)
    aside.discard()
    log.info("[pipeline %d/%d] report → %s", len(STAGES), len(STAGES), out / "report")
    report_dir = stages.finish(record, start)
    skipped = {n: v["reason"] for n, v in record.runtimes.items() if v["status"] == "skipped"}
    return PipelineResult(out, report_dir, record.to_dict(), tuple(record.failures), skipped, record.interrupted,
                          record.no_runtime)


def _run_stages(config: PipelineConfig, given: TorchModel | None, given_meta: Mapping[str, Any] | None,
                targets: list[Target], record: PipelineRecord, progress: PipelineProgress, aside: SetAside) -> None:
    if given is None:
        try:
            meta = stages.train_stage(config.train, record, progress.show_progress, aside)  # may restore ``aside``
        except stages.TrainingFailed:
            return
        torch_model = TorchModel(Path(record.training["checkpoint"]), "trained by this pipeline")
    else:
        _stage(record, 1, f"train: skipped, using {given.path}")
        stages.summarize_training(record, given.path, given_meta, None, "checkpoint")
        torch_model, meta = given, given_meta
    aside.discard()  # the new run has its checkpoint: the earlier one is no longer needed
    exported: dict[tuple[str, str], Path] = {}
    for key in dict.fromkeys(t.export for t in targets):
        _stage(record, 2, f"export {key[0]}" + ("" if key[1] == "conv" else f" ({key[1]} LRN)"))
        path = stages.export_stage(torch_model.path, record, *key, calibration_images=config.calibration_images,
                                   parity_images=config.export_parity_images, progress=progress.export)
        if path is not None:
            exported[key] = path
    plan = BenchPlan(batch_sizes=config.batch_sizes, timing=config.timing, options=config.options,
                     parity_samples=config.parity_samples, parity_images=0)
    groups = _groups([t for t in targets if t.export in exported])
    _stage(record, 3, f"bench {len(groups)} file × precision group(s), interleaved")
    ran: list[Target] = []
    outcome = stages.bench_stage([(exported[export], precision, export[1], [t.runtime for t in group])
                                  for (export, precision), group in groups.items()], torch_model, plan, record,
                                 progress.bench)
    for group, any_ran in zip(groups.values(), outcome):
        ran += group if any_ran else []
    if ran:
        _stage(record, 4, "task parity on the validation images")
        stages.task_parity_stage(torch_model, meta, [(t.runtime, t.precision, exported[t.export]) for t in ran],
                                 config.options, config.batch_sizes, config.task_images, record)
        if config.capacity is not None:
            from deploy.pipeline.capacity_stage import capacity_stage

            _stage(record, 5, f"capacity at p99 <= {config.capacity.slo_ms:g} ms (MLPerf LoadGen)")
            capacity_stage(config.capacity, list(dict.fromkeys(exported[t.export] for t in ran)),
                           list(dict.fromkeys(t.runtime for t in ran)), config.precisions, config.max_accuracy_drop,
                           config.options, record)
        if config.layers:
            from deploy.pipeline.layers_stage import layers_stage

            _stage(record, 6, "layer parity and layer time of the recommendation")
            layers_stage(torch_model, meta, record, config.options)
    if exported and not record.results and all(v["status"] == "skipped" for v in record.runtimes.values()):
        record.no_runtime = True  # available on paper, but every one of them turned out unable to run here


def _targets(runtimes: tuple[str, ...], precisions: tuple[str, ...], record: PipelineRecord) -> list[Target]:
    """Every runtime × precision that can run here, on the file it runs (its own LRN form; bf16 on the fp32 file);
    the others are recorded as skipped with the reason. The torch runtime runs the checkpoint: fp32 and bf16."""
    targets = []
    for name in runtimes:
        ok, reason = availability(name)
        if not ok:
            record.runtimes[name] = {"status": "skipped", "reason": reason}
            continue
        cls = runtime_class(name)
        for precision in precisions:
            if not cls.runs_onnx and precision in ("fp16", "int8"):
                continue  # the PyTorch model is fp32; its fp16/int8 counterparts are the exported files
            ok, reason = cls.supports(precision)
            if not ok:
                record.skipped[(name, precision)] = reason
                continue
            targets.append(Target(name, precision, ("fp32" if precision == "bf16" else precision, cls.preferred_lrn)))
    return targets


def _groups(targets: list[Target]) -> dict[tuple[tuple[str, str], str], list[Target]]:
    """Targets that share a file and a precision are benched together (one bench run, one JSON)."""
    groups: dict[tuple[tuple[str, str], str], list[Target]] = {}
    for t in targets:
        groups.setdefault((t.export, t.precision), []).append(t)
    return groups


def _claim_folder(out: Path, overwrite: bool, keep_train: bool) -> SetAside:
    """Refuse a folder holding an earlier pipeline run, or with ``overwrite`` set its entries aside until the new run
    has its checkpoint (train/ stays when a --checkpoint run does not write it: the checkpoint may be in it)."""
    from trainer.checkpoint import WEIGHTS_NAME
    from trainer.errors import OutputExistsError

    if recover_set_aside(out, list(RUN_ENTRIES)):
        log.warning("%s: put back the earlier run that an interrupted --overwrite had set aside", out)
    earlier = [p for p in (out / "train" / WEIGHTS_NAME, out / "onnx", out / stages.REPORT_DIR) if p.exists()]
    if earlier and not overwrite:
        raise OutputExistsError(f"{out} already holds a pipeline run ({', '.join(str(p) for p in earlier)}); pick "
                                "another --out or replace it with --overwrite")
    out.mkdir(parents=True, exist_ok=True)
    names = [n for n in RUN_ENTRIES if not (keep_train and n == "train")]
    aside = SetAside(out, names if earlier else [])
    if aside.moved:
        log.warning("--overwrite: the earlier run in %s is set aside until the new one has its checkpoint", out)
    return aside


def _stage(record: PipelineRecord, number: int, text: str) -> None:
    record.stage = text
    log.info("[pipeline %d/%d] %s", number, len(STAGES), text)


def _settings(config: PipelineConfig) -> dict[str, Any]:
    return {"checkpoint": config.checkpoint, "runtimes": list(config.runtimes),
            "precisions": list(config.precisions), "batch_sizes": list(config.batch_sizes),
            "timing": dataclasses.asdict(config.timing), "runtime_options": dataclasses.asdict(config.options),
            "parity_samples": config.parity_samples, "export_parity_images": config.export_parity_images,
            "calibration_images": config.calibration_images, "task_images": config.task_images,
            "max_accuracy_drop": config.max_accuracy_drop, "baseline": config.baseline,
            "max_slowdown": config.max_slowdown, "layers": config.layers,
            "capacity": dataclasses.asdict(config.capacity) if config.capacity else None,
            "train": None if config.checkpoint else config.train.to_dict()}
