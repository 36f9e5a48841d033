"""pipeline: train → export → bench + task parity on every runtime → one deployment report."""
from __future__ import annotations

from pathlib import Path

import click

from commands import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_UNAVAILABLE
from commands.options import (ROUNDS_OPTION, RUNTIMES_OPTION, SECONDS, FiniteRange, batch_sizes, finish_gate,
                              gate_options, list_option, runtime_options, warmup)
from commands.train import train, train_config, train_options
from core.contract import PRECISIONS


def _ignored_train_options(ctx: click.Context) -> list[str]:
    """Training options typed on the command line, which --checkpoint makes moot (--device also picks the torch
    runtime's device, so it still counts)."""
    from click.core import ParameterSource

    train_names = {p.name for p in train.params} - {"out", "overwrite", "resume", "device"}
    return [p.opts[0] for p in ctx.command.params if p.name in train_names
            and ctx.get_parameter_source(p.name) == ParameterSource.COMMANDLINE]


def _capacity_plan(slo_ms: float | None):
    """The capacity measurement --slo-ms asks for, with the capacity command's defaults (deploy/serving/plan.py)."""
    if slo_ms is None:
        return None
    from deploy.serving.plan import CapacityPlan

    return CapacityPlan(slo_ms=slo_ms)


@click.command()
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Pipeline folder: train/ (the run), onnx/ (the exported files), report/ (report.md, report.json, "
                   "plots). Default: runs/<timestamp>. A folder holding an earlier pipeline run is refused (see "
                   "--overwrite).")
@click.option("--overwrite", is_flag=True,
              help="Replace an earlier pipeline run in --out. It is set aside and deleted only once the new run has "
                   "its checkpoint; if training fails before that, the earlier run is put back.")
@click.option("--checkpoint", type=click.Path(exists=True, path_type=Path), default=None,
              help="Skip training and use this run folder (or .safetensors); its recorded validation split gives "
                   "the task-parity images.")
@RUNTIMES_OPTION
@click.option("--precisions", default=",".join(PRECISIONS), show_default=True,
              callback=list_option(PRECISIONS, allow_all=False),
              help="Comma-separated precisions to export, bench and check (bf16 runs the fp32 file with bf16 "
                   "arithmetic where a runtime computes it natively).")
@click.option("--batch-sizes", default="1,32", show_default=True, callback=batch_sizes,
              help="Bench batch sizes (latency.png uses the smallest).")
@click.option("--warmup", default="0.3s", show_default=True, callback=warmup,
              help="Warm-up per runtime, precision and batch size: N iterations or a duration such as 1s.")
@click.option("--duration", type=SECONDS, default=1.0, show_default=True,
              help="Timed seconds per runtime, precision and batch size (at least 5 iterations), split over --rounds "
                   "interleaved across all of them.")
@ROUNDS_OPTION
@click.option("--task-images", type=click.IntRange(1, 1_000_000), default=None,
              help="Validation images for task-level parity (top-1, agreement). Default: the whole split.")
@click.option("--calibration-images", type=click.IntRange(1, 100_000), default=128, show_default=True,
              help="int8: calibration images (from the training images).")
@click.option("--parity-samples", type=click.IntRange(1, 100_000), default=16, show_default=True,
              help="Fixed-seed random inputs each runtime is compared on (the validation images are compared too).")
@click.option("--threads", type=click.IntRange(1, 1024), default=None,
              help="CPU threads for torch, ONNX Runtime and OpenVINO in the bench. Default: the usable cores.")
@click.option("--slo-ms", type=FiniteRange(min=0, max=600_000, min_open=True), default=None,
              help="Also measure capacity: the LoadGen Server QPS each runtime × precision sustains at this p99 "
                   "latency (OUT/capacity/), a third objective of the recommendation, and a Triton repository for its "
                   "pick configured as measured (OUT/triton/). Adds several minutes per runtime × precision.")
@click.option("--layers/--no-layers", default=True, show_default=True,
              help="Add the recommended deployments' layer parity and layer time (by each runtime's profiler) to "
                   "the report.")
@gate_options("An earlier run's OUT/report/report.json (or a bench --json) to compare with: exit 1 when a row "
              "shared by both is slower than --max-slowdown, fails parity that passed, or lost top-1 (the report is "
              "written first; it may be the report this run replaces with --overwrite).")
@train_options()
@click.pass_context
def pipeline(ctx: click.Context, out: Path | None, checkpoint: Path | None, runtimes: tuple[str, ...],
             precisions: tuple[str, ...], batch_sizes: tuple[int, ...], warmup: tuple[int, float], duration: float,
             task_images: int | None, calibration_images: int, parity_samples: int, threads: int | None,
             baseline: Path | None, max_slowdown: float, max_accuracy_drop: float, inconclusive: str, rounds: int,
             layers: bool, slo_ms: float | None, **train_opts) -> None:
    """Train, export each precision, bench and check every runtime, and write one deployment report.

    Writes OUT/train/ (the run), OUT/onnx/model.<precision>[.native-lrn].onnx (each runtime runs the LRN form measured
    fastest for it) and OUT/report/ (report.md, report.json, plots, one bench JSON per file and precision).

    report.md starts with the recommendation: per objective (latency at batch 1, throughput at the largest batch)
    the fastest runtime × precision that passed parity within --max-accuracy-drop top-1 points of PyTorch fp32.

    Exit codes: 0 ok, 1 an export, parity check or runtime failed, or a --baseline regression (after the report), 2
    bad usage (including a --baseline that is not a bench/pipeline report), 3 none of the requested runtimes can run
    here, 4 a --baseline row neither within nor beyond --max-slowdown with 95% confidence (unless --inconclusive
    pass), 130 interrupted (the report holds what finished).
    """
    from deploy.pipeline.pipeline import PipelineConfig, PipelineProgress, run_pipeline
    from deploy.pipeline.report import render_text
    from deploy.bench.render import gate_failure, gate_text
    from deploy.progress import progress_for
    from deploy.bench.timing import BenchConfig

    if checkpoint is not None and (ignored := _ignored_train_options(ctx)):
        click.echo(f"Warning: --checkpoint skips training; ignoring {', '.join(ignored)}.", err=True)
    config = PipelineConfig(
        train=train_config(train_opts), checkpoint=str(checkpoint) if checkpoint else None,
        out=str(out) if out else None, runtimes=runtimes, precisions=precisions, batch_sizes=batch_sizes,
        timing=BenchConfig(warmup_iters=warmup[0], warmup_s=warmup[1], duration_s=duration, rounds=rounds),
        options=runtime_options({"threads": threads, "device": train_opts["device"]}),
        calibration_images=calibration_images, parity_samples=parity_samples, task_images=task_images,
        overwrite=train_opts["overwrite"], max_accuracy_drop=max_accuracy_drop,
        baseline=str(baseline) if baseline else None, max_slowdown=max_slowdown, layers=layers,
        capacity=_capacity_plan(slo_ms))
    shown = ctx.obj["progress"]
    progress = PipelineProgress(show_progress=shown, bench=progress_for(shown),
                                export=(lambda text: click.echo(f"[export] {text}", err=True)) if shown else None)
    result = run_pipeline(config, progress)
    click.echo(render_text(result.report))
    gate = result.report["gate"]
    if gate is not None:
        click.echo("\n" + gate_text(gate))
    click.echo(f"Report: {result.report_dir / 'report.md'}  (+ report.json, plots)")
    if result.interrupted:
        click.echo(f"Interrupted during {result.report['interrupted_during']}: the report holds what finished.",
                   err=True)
        ctx.exit(EXIT_INTERRUPTED)
    failures = list(result.failures)
    if gate is not None and gate["outcome"] == "fail":
        failures.append(gate_failure(gate))
    if failures:
        click.echo("Error: " + "\n  ".join(failures), err=True)
        ctx.exit(EXIT_FAILED)
    if result.no_runtime:
        reasons = "\n  ".join(f"{name}: {why}" for name, why in result.skipped.items())
        click.echo(f"Error: none of the requested runtimes can run here:\n  {reasons}", err=True)
        ctx.exit(EXIT_UNAVAILABLE)
    finish_gate(ctx, gate, inconclusive)
