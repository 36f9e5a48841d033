"""inspect: per-layer parity and per-layer time of one model's ONNX files on every runtime × precision."""
from __future__ import annotations

from pathlib import Path

import click

from commands import EXIT_FAILED, EXIT_INTERRUPTED
from commands.options import MISMATCH_OPTION, RUNTIMES_OPTION, SECONDS, list_option
from core.contract import MAX_BATCH, PRECISIONS
from runtimes.registry import RUNTIME_NAMES


@click.command()
@click.argument("models", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@RUNTIMES_OPTION
@click.option("--precisions", "--precision", "precisions", default=None,
              callback=lambda ctx, param, value: None if value is None else list_option(PRECISIONS, True)(
                  ctx, param, value),
              help="Comma-separated precisions (fp32, fp16, int8, bf16) or all. Default: those of the files given, "
                   "and bf16 (the fp32 file in bf16) when there is an fp32 one.")
@click.option("--images", type=click.IntRange(1, 4096), default=32, show_default=True,
              help="Validation images (from the data named in the ONNX metadata) for layer parity.")
@click.option("--batch-size", type=click.IntRange(1, MAX_BATCH), default=32, show_default=True,
              help="Batch size of the layer times and of the latency they are set beside.")
@click.option("--duration", type=SECONDS, default=3.0, show_default=True,
              help="Seconds of end-to-end latency measurement per runtime × precision (without the profiler).")
@click.option("--no-parity", is_flag=True, help="Skip layer parity (layer time only).")
@click.option("--no-time", is_flag=True, help="Skip layer time (layer parity only).")
@click.option("--reference", type=click.Path(exists=True, path_type=Path), default=None,
              help="PyTorch checkpoint (run folder or .safetensors). Default: the one named in the ONNX metadata.")
@MISMATCH_OPTION
@click.option("--threads", type=click.IntRange(1, 1024), default=None,
              help="CPU threads for torch, ONNX Runtime and OpenVINO. Default: the cores this process may use.")
@click.option("--device", default="auto", show_default=True, help="Device of the torch runtime: auto, cpu, cuda.")
@click.option("--out", "out", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Folder for layers.json, layers.md, layer_error.png and layer_time.png (created; other files in "
                   "it are left alone).")
@click.pass_context
def inspect(ctx: click.Context, models: tuple[Path, ...], runtimes: tuple[str, ...],
            precisions: tuple[str, ...] | None, out: Path, **opts) -> None:
    """Inside the model: each AlexNet layer (conv1 … fc8, with the LRN and pools) on every runtime × precision.

    Layer parity compares every layer's output with PyTorch fp32's on validation images and names the first layer
    beyond the precision's tolerance; layer time attributes each runtime's own profiler to the same layers at one
    batch size, beside the latency measured there. Give one model's exports (any precisions and LRN forms): each
    runtime runs its preferred LRN form.

    Exit codes: 0 every layer within tolerance, 1 a layer beyond it or a runtime that failed (after the report),
    2 bad usage, 3 a named runtime is not available here, 130 interrupted (what finished is written).
    """
    from core.fileio import check_not_an_input, check_writable
    from deploy.layers.inspect import InspectPlan, inspect_layers
    from deploy.layers.report import FILES, write_report
    from deploy.progress import progress_for

    if opts["no_parity"] and opts["no_time"]:
        raise click.BadParameter("--no-parity and --no-time leave nothing to do", param_hint="--no-time")
    inputs = {f"the model {m}": m for m in models}
    if opts["reference"] is not None:
        from trainer.checkpoint import checkpoint_files

        inputs.update(checkpoint_files(opts["reference"]))
    check_not_an_input(out, inputs, "--out")
    for name in FILES:
        check_not_an_input(out / name, inputs, "--out")
    check_writable(out / FILES[0], "--out")
    plan = InspectPlan(
        runtimes=runtimes, precisions=precisions or (), images=opts["images"], batch_size=opts["batch_size"],
        options=_options(opts), skip_unavailable=runtimes == RUNTIME_NAMES, parity=not opts["no_parity"],
        profile=not opts["no_time"], reference=opts["reference"],
        allow_checkpoint_mismatch=opts["allow_checkpoint_mismatch"])
    report = inspect_layers(models, plan, timer=_timer(opts["duration"]), progress=progress_for(ctx.obj["progress"]))
    for path in write_report(out, report.to_dict()):
        click.echo(f"Wrote {path}")
    click.echo(summary(report))
    if report.interrupted:
        click.echo("Interrupted: the report holds the rows that finished.", err=True)
        ctx.exit(EXIT_INTERRUPTED)
    failures = [f"{p.runtime} {p.precision}: {p.error or 'first diverging layer ' + p.first_divergence.layer}"
                for p in report.parity if not p.passed]
    failures += [f"{p.runtime} {p.precision}: layer time {p.reason}" for p in report.profiles
                 if p.reason.startswith("failed")]
    if failures:
        click.echo("Error: layer check failed: " + "; ".join(failures), err=True)
        ctx.exit(EXIT_FAILED)


def _options(opts: dict):
    from runtimes.options import RuntimeOptions

    return RuntimeOptions(threads=opts["threads"], device=opts["device"])


def _timer(duration_s: float):
    """The bench's measurement loop, reduced to the p50 latency the layer times are set beside."""
    import statistics

    from deploy.bench.timing import BenchConfig, measure

    config = BenchConfig(warmup_iters=3, duration_s=duration_s, rounds=3)
    return lambda runtime, feeds: statistics.median(measure(runtime, feeds, config).host_ms)


def summary(report) -> str:
    """One line per runtime × precision: where it first diverges and how its layer times add up; then what was
    skipped."""
    parity = {(p.runtime, p.precision): p for p in report.parity}
    times = {(p.runtime, p.precision): p for p in report.profiles}
    lines = []
    for key in dict.fromkeys([*parity, *times]):
        parts = [f"{key[0]:<12} {key[1]:<5}"]
        row = parity.get(key)
        if row is not None:
            first = row.first_divergence
            parts.append(f"failed: {row.error}" if row.error else
                         f"first beyond tolerance: {first.layer}" if first else "every layer within tolerance")
        profile = times.get(key)
        if profile is not None:
            parts.append(f"layers {profile.attributed_ms:.1f} ms, measured {profile.measured_ms:.1f} ms"
                         if profile.available and profile.measured_ms else
                         f"layers {profile.attributed_ms:.1f} ms" if profile.available else
                         f"no layer time: {profile.reason}")
        lines.append("  ".join(parts))
    if report.skipped:
        lines.append(f"not run here: {', '.join(report.skipped)} (layers.md says why)")
    return "\n".join(lines)
