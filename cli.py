"""alexnet-deploy command line: train, export, bench and more. Only this module prints or picks exit codes."""
from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

import click

from runtimes.errors import EXIT_UNAVAILABLE
from runtimes.registry import RUNTIME_NAMES  # names only: the adapters are imported on first use

# Exit codes: 0 ok, 1 a ToolkitError (bad input, failed check), 2 bad usage (click), 3 runtime unavailable, 130 Ctrl-C.
EXIT_INTERRUPTED = 130


def _floats(n: int):
    """A click callback parsing ``a,b[,c]`` into a tuple of ``n`` floats."""
    def parse(ctx: click.Context, param: click.Parameter, value: str | None):
        if value is None:
            return None
        try:
            parts = tuple(float(v) for v in value.split(","))
        except ValueError:
            raise click.BadParameter(f"expected {n} comma-separated numbers, got {value!r}") from None
        if len(parts) != n:
            raise click.BadParameter(f"expected {n} comma-separated numbers, got {len(parts)}")
        return parts
    return parse


class ToolkitGroup(click.Group):
    """Turns the toolkit's expected errors into one clear message and an exit code, never a traceback."""

    def invoke(self, ctx: click.Context):
        from trainer.errors import ToolkitError

        try:
            return super().invoke(ctx)
        except ToolkitError as e:
            code = getattr(e, "exit_code", 1)
            if type(e).__name__ == "TrainingInterrupted":
                code = EXIT_INTERRUPTED
            # Training under torchrun: every rank fails alike, so rank 0 speaks for all of them.
            if ctx.invoked_subcommand != "train" or os.environ.get("RANK", "0") == "0":
                click.echo(f"Error: {e}", err=True)
            ctx.exit(code)
        except KeyboardInterrupt:
            click.echo("Interrupted.", err=True)
            ctx.exit(EXIT_INTERRUPTED)


@click.group(cls=ToolkitGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option("-v", "--verbose", is_flag=True, help="Debug logging.")
@click.option("-q", "--quiet", is_flag=True, help="Only warnings and errors; no progress bars.")
@click.pass_context
def main(ctx: click.Context, verbose: bool, quiet: bool) -> None:
    """Train AlexNet, export it to validated ONNX and run it on PyTorch, ONNX Runtime and TensorRT."""
    from tqdm.contrib.logging import logging_redirect_tqdm

    level = logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO
    logging.basicConfig(level=level, format="%(message)s", stream=sys.stderr)
    ctx.with_resource(logging_redirect_tqdm())  # log lines print above progress bars instead of through them
    ctx.obj = {"progress": not quiet and sys.stderr.isatty() or bool(verbose)}


# ---- train (its options are shared with pipeline) ----

_DATA_OPTION = click.option(
    "--data", type=click.Path(path_type=Path), default=None,
    help="Image folder DIR/<class>/<image> (or DIR/train + DIR/val). Default: the built-in shapes data, generated "
         "once and cached.")
_TRAIN_OPTIONS = (
    click.option("--epochs", type=click.IntRange(min=1), default=None,
                 help="Maximum epochs. Default: 15 (with --resume: the run's own)."),
    click.option("--batch-size", type=click.IntRange(min=1), default=32, show_default=True, help="Images per step."),
    click.option("--optimizer", type=click.Choice(["adamw", "sgd"]), default="adamw", show_default=True,
                 help="AdamW, or SGD with momentum (the paper's; try --lr 0.005)."),
    click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=1e-4, show_default=True,
                 help="Initial learning rate."),
    click.option("--momentum", type=click.FloatRange(0, 1), default=0.9, show_default=True, help="SGD momentum."),
    click.option("--weight-decay", type=click.FloatRange(min=0), default=5e-4, show_default=True,
                 help="L2 weight decay."),
    click.option("--warmup-epochs", type=click.IntRange(min=0), default=0, show_default=True,
                 help="Linear learning-rate warm-up over the first N epochs."),
    click.option("--dropout", type=click.FloatRange(0, 1, max_open=True), default=0.5, show_default=True,
                 help="Dropout before FC6 and FC7."),
    click.option("--val-split", type=click.FloatRange(0, 1, min_open=True, max_open=True), default=0.2,
                 show_default=True, help="Per-class validation share when DIR has no train/ and val/ folders."),
    click.option("--seed", type=int, default=0, show_default=True, help="Seed for the split, init, order and dropout."),
    click.option("--skip-bad-images", is_flag=True, help="Skip unreadable image files (and report how many) "
                                                         "instead of failing."),
    click.option("--no-augment", is_flag=True, help="Turn all augmentation off."),
    click.option("--rotation", type=click.FloatRange(min=0, max=180), default=15.0, show_default=True,
                 help="Random rotation range in degrees (±)."),
    click.option("--zoom", callback=_floats(2), default="0.8,1.2", show_default=True,
                 help="Random rescale range MIN,MAX (<1 zooms out, >1 zooms in)."),
    click.option("--hflip/--no-hflip", default=True, show_default=True, help="Random horizontal flip."),
    click.option("--vflip/--no-vflip", default=True, show_default=True, help="Random vertical flip."),
    click.option("--mean", callback=_floats(3), default=None, help="Normalisation mean R,G,B. Default: ImageNet's."),
    click.option("--std", callback=_floats(3), default=None, help="Normalisation std R,G,B. Default: ImageNet's."),
    click.option("--es-monitor", default="val_loss", show_default=True, help="EarlyStopping: metric to monitor."),
    click.option("--es-patience", type=click.IntRange(min=0), default=10, show_default=True,
                 help="EarlyStopping: epochs without improvement before stopping."),
    click.option("--es-min-delta", type=float, default=0.0, show_default=True,
                 help="EarlyStopping: smallest absolute change that counts as an improvement."),
    click.option("--es-mode", type=click.Choice(["auto", "min", "max"]), default="auto", show_default=True,
                 help="EarlyStopping: direction of improvement."),
    click.option("--es-baseline", type=float, default=None, help="EarlyStopping: value the monitor must beat."),
    click.option("--es-start-from-epoch", type=click.IntRange(min=0), default=0, show_default=True,
                 help="EarlyStopping: epochs to wait before monitoring."),
    click.option("--restore-best-weights/--no-restore-best-weights", default=True, show_default=True,
                 help="EarlyStopping: finish with the best epoch's weights."),
    click.option("--rlr-monitor", default="val_accuracy", show_default=True,
                 help="ReduceLROnPlateau: metric to monitor."),
    click.option("--rlr-factor", type=click.FloatRange(0, 1, min_open=True, max_open=True), default=0.5,
                 show_default=True, help="ReduceLROnPlateau: lr multiplier."),
    click.option("--rlr-patience", type=click.IntRange(min=0), default=2, show_default=True,
                 help="ReduceLROnPlateau: epochs without improvement before reducing."),
    click.option("--rlr-min-lr", type=click.FloatRange(min=0), default=1e-5, show_default=True,
                 help="ReduceLROnPlateau: lower bound on the lr."),
    click.option("--rlr-min-delta", type=float, default=1e-4, show_default=True,
                 help="ReduceLROnPlateau: smallest absolute change that counts as an improvement."),
    click.option("--rlr-cooldown", type=click.IntRange(min=0), default=0, show_default=True,
                 help="ReduceLROnPlateau: epochs to wait after a reduction."),
    click.option("--rlr-mode", type=click.Choice(["auto", "min", "max"]), default="auto", show_default=True,
                 help="ReduceLROnPlateau: direction of improvement."),
    click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N."),
    click.option("--amp", type=click.Choice(["auto", "off", "bf16", "fp16"]), default="auto", show_default=True,
                 help="Mixed precision: auto = bf16 on CPUs with native bf16 and on CUDA (fp16 where bf16 is "
                      "missing)."),
    click.option("--workers", type=click.IntRange(min=-1), default=-1, show_default=True,
                 help="Data-loading processes (-1: one per two cores, 0: in the training process)."),
)


def _train_options(*after_data):
    """Decorate a command with --data, then ``after_data``, then every other training option (train, pipeline)."""
    def decorate(f):
        for option in reversed((_DATA_OPTION, *after_data, *_TRAIN_OPTIONS)):
            f = option(f)
        return f
    return decorate


def _train_config(opts: dict, out: Path | None = None):
    """The TrainConfig that the training options in ``opts`` describe (``out``: the run folder)."""
    from trainer.config import EarlyStoppingConfig, ReduceLRConfig, TrainConfig
    from trainer.data import IMAGENET_MEAN, IMAGENET_STD, AugmentConfig

    augment = AugmentConfig(enabled=not opts["no_augment"], rotation_deg=opts["rotation"], zoom=opts["zoom"],
                            hflip=opts["hflip"], vflip=opts["vflip"])
    if augment.zoom[0] <= 0 or augment.zoom[0] > augment.zoom[1]:
        raise click.BadParameter("--zoom needs 0 < MIN <= MAX", param_hint="--zoom")
    return TrainConfig(
        data=str(opts["data"]) if opts["data"] else None, out=str(out) if out else None,
        epochs=opts["epochs"] or TrainConfig.epochs, batch_size=opts["batch_size"], optimizer=opts["optimizer"],
        lr=opts["lr"], momentum=opts["momentum"], weight_decay=opts["weight_decay"],
        warmup_epochs=opts["warmup_epochs"], dropout=opts["dropout"], val_split=opts["val_split"],
        seed=opts["seed"], skip_bad_images=opts["skip_bad_images"], augment=augment,
        mean=opts["mean"] or IMAGENET_MEAN, std=opts["std"] or IMAGENET_STD,
        early_stopping=EarlyStoppingConfig(
            monitor=opts["es_monitor"], min_delta=opts["es_min_delta"], patience=opts["es_patience"],
            mode=opts["es_mode"], baseline=opts["es_baseline"], restore_best_weights=opts["restore_best_weights"],
            start_from_epoch=opts["es_start_from_epoch"]),
        reduce_lr=ReduceLRConfig(
            monitor=opts["rlr_monitor"], factor=opts["rlr_factor"], patience=opts["rlr_patience"],
            min_lr=opts["rlr_min_lr"], min_delta=opts["rlr_min_delta"], cooldown=opts["rlr_cooldown"],
            mode=opts["rlr_mode"]),
        device=opts["device"], amp=opts["amp"], workers=opts["workers"], overwrite=opts["overwrite"])


@main.command()
@_train_options(
    click.option("--out", type=click.Path(path_type=Path), default=None,
                 help="Run folder. Default: runs/<timestamp>. A folder that holds a run is refused (see --overwrite)."),
    click.option("--overwrite", is_flag=True,
                 help="Replace the run already in --out (its weights, metadata, history and resume state)."),
    click.option("--resume", type=click.Path(path_type=Path), default=None,
                 help="Continue the run in this folder after its last finished epoch (its saved settings apply; "
                      "--epochs may change the epoch count)."),
    click.option("--nproc-per-node", type=click.IntRange(min=1), default=1, show_default=True,
                 help="Data-parallel processes on this machine, one per GPU (or on the CPU with --device cpu), "
                      "started through torchrun; --batch-size is then per process. For several machines, start "
                      "'torchrun ... cli.py train' yourself."))
@click.pass_obj
def train(obj: dict, **opts) -> None:
    """Train AlexNet on an image folder (default: the built-in shapes data)."""
    from trainer import distributed
    from trainer.run import train as run_training

    nproc, launch = opts["nproc_per_node"], distributed.env_context()
    if nproc > 1 and not distributed.launched():  # this very command line, once per process, under torchrun
        distributed.launch(nproc, sys.argv)
        return
    if distributed.launched() and nproc > 1 and nproc != launch.local_world_size:
        raise click.BadParameter(f"torchrun started {launch.local_world_size} processes on this machine",
                                 param_hint="--nproc-per-node")
    if not launch.is_main:  # rank 0 speaks for the run; the others would repeat its logs and bars
        logging.getLogger().setLevel(logging.WARNING)
        obj["progress"] = False
    config = _train_config(opts, opts["out"])
    if opts["resume"] is not None and not opts["resume"].is_dir():
        raise click.BadParameter(f"run folder not found: {opts['resume']}", param_hint="--resume")
    result = run_training(config, resume=opts["resume"], resume_epochs=opts["epochs"], show_progress=obj["progress"])
    if not launch.is_main:
        return
    meta = result.meta
    best = meta.get("metrics", {})
    click.echo(f"Trained {meta['epochs_run']} epoch(s): {meta['stop_reason']}.")
    if best:
        click.echo(f"Best epoch {meta['best_epoch'] + 1}: val_accuracy {best['val_accuracy']:.4f}, "
                   f"val_loss {best['val_loss']:.4f} (weights from the {meta['weights_from']}).")
    click.echo(f"Checkpoint: {result.weights}  (+ model.json, history.csv)")


# ---- bench ----

def _batch_sizes_option(ctx: click.Context, param: click.Parameter, value: str) -> tuple[int, ...]:
    try:
        sizes = tuple(int(v) for v in value.split(",") if v.strip())
    except ValueError:
        raise click.BadParameter(f"expected comma-separated integers like 1,8,32, got {value!r}") from None
    if not sizes or min(sizes) < 1:
        raise click.BadParameter(f"batch sizes must be integers >= 1, got {value!r}")
    return sizes


def _warmup_option(ctx: click.Context, param: click.Parameter, value: str) -> tuple[int, float]:
    """``N`` → N warm-up iterations; ``2s`` / ``0.5s`` → that many seconds (and at least one iteration)."""
    text = value.strip().lower()
    try:
        result = (1, float(text[:-1])) if text.endswith("s") else (int(text), 0.0)
    except ValueError:
        result = (-1, -1.0)
    if result[0] < 0 or result[1] < 0:
        raise click.BadParameter(f"expected a number of iterations (5) or seconds (2s), got {value!r}")
    return result


def _bench_progress(enabled: bool):
    """tqdm bars for the bench's timed loops (stderr), or the silent default."""
    from runtimes.bench import Progress

    if not enabled:
        return Progress()
    from tqdm import tqdm

    class BarProgress(Progress):
        bar = None

        def stage(self, text: str) -> None:
            tqdm.write(f"[bench] {text}", file=sys.stderr)

        def start(self, label: str, iterations: int | None, duration_s: float | None) -> None:
            self.seconds, self.shown_at = iterations is None, 0.0
            self.bar = tqdm(total=iterations or duration_s, desc=label, unit="it" if iterations else "s",
                            leave=False, file=sys.stderr, bar_format="{l_bar}{bar}| {n:.0f}/{total:.0f} {unit}")

        def step(self, done: int, elapsed_s: float) -> None:
            if elapsed_s - self.shown_at >= 0.2:  # a redraw per sub-millisecond GPU iteration would cost more
                self.shown_at = elapsed_s
                self.bar.n = min(elapsed_s, self.bar.total) if self.seconds else done
                self.bar.refresh()

        def end(self) -> None:
            if self.bar is not None:
                self.bar.close()

    return BarProgress()


@main.command()
@click.argument("model", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--runtime", type=click.Choice(["all", *RUNTIME_NAMES]),
              default="all", show_default=True,
              help="Runtime to benchmark; 'all' runs every available one (unavailable ones are listed as skipped) "
                   "and compares throughput with the reference.")
@click.option("--batch-sizes", default="1,8,32", show_default=True, callback=_batch_sizes_option,
              help="Comma-separated batch sizes, swept in one run.")
@click.option("--warmup", default="1s", show_default=True, callback=_warmup_option,
              help="Warm-up before timing, per runtime and batch size: N iterations, or a duration such as 2s "
                   "(at least one iteration).")
@click.option("--iterations", type=click.IntRange(min=1), default=None,
              help="Timed iterations per runtime and batch size (instead of --duration).")
@click.option("--duration", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Timed seconds per runtime and batch size (at least 5 iterations). Default: 2 s.")
@click.option("--reference", type=click.Path(exists=True, path_type=Path), default=None,
              help="PyTorch reference checkpoint (run folder or .safetensors). Default: the checkpoint named in the "
                   "ONNX metadata when present, else ONNX Runtime CPU on the same file.")
@click.option("--device", default="auto", show_default=True,
              help="Device of the torch runtime and reference: auto, cpu, cuda or cuda:N.")
@click.option("--threads", type=click.IntRange(min=1), default=None,
              help="CPU threads for torch and ONNX Runtime. Default: the cores this process may use.")
@click.option("--graph-optimization", type=click.Choice(["disable", "basic", "extended", "all"]), default="all",
              show_default=True, help="ONNX Runtime graph optimisation level.")
@click.option("--compile", "compile_", is_flag=True, help="torch.compile the benchmarked torch runtime.")
@click.option("--allow-tf32", is_flag=True, help="Allow TF32 on GPU runtimes (faster; fp32 parity may then miss).")
@click.option("--cudnn-algo-search", type=click.Choice(["EXHAUSTIVE", "HEURISTIC", "DEFAULT"]),
              default="EXHAUSTIVE", show_default=True, help="onnxruntime-cuda: cuDNN convolution algorithm search.")
@click.option("--cuda-graph", is_flag=True, help="onnxruntime-cuda: capture and replay CUDA graphs.")
@click.option("--allow-cpu-nodes", is_flag=True,
              help="onnxruntime-cuda: accept graph nodes that ONNX Runtime places on the CPU (listed in the report); "
                   "by default any such node fails the load.")
@click.option("--engine-cache", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="tensorrt: engine cache folder. Default: ~/.cache/alexnet-deploy/trt-engines.")
@click.option("--workspace-mb", type=click.IntRange(min=16), default=1024, show_default=True,
              help="tensorrt: builder workspace limit in MiB.")
@click.option("--opt-batch", type=click.IntRange(min=1), default=None,
              help="tensorrt: the profile's optimal batch. Default: the largest batch size.")
@click.option("--parity-samples", type=click.IntRange(min=1), default=16, show_default=True,
              help="Fixed-seed random inputs compared with the reference.")
@click.option("--images", type=click.IntRange(min=0), default=64, show_default=True,
              help="Real validation images compared with the reference (from the data named in the ONNX metadata; "
                   "0 = none).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the random inputs.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write the full report as JSON.")
@click.option("--markdown", "markdown_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write the report as a Markdown table.")
@click.pass_context
def bench(ctx: click.Context, model: Path, runtime: str, batch_sizes: tuple[int, ...], warmup: tuple[int, float],
          iterations: int | None, duration: float | None, reference: Path | None, device: str, threads: int | None,
          graph_optimization: str, compile_: bool, allow_tf32: bool, cudnn_algo_search: str, cuda_graph: bool,
          allow_cpu_nodes: bool, engine_cache: Path | None, workspace_mb: int, opt_batch: int | None,
          parity_samples: int, images: int, seed: int, json_path: Path | None, markdown_path: Path | None) -> None:
    """Benchmark an ONNX model on PyTorch, ONNX Runtime (CPU/CUDA) and TensorRT, parity-checked on every run.

    Exit codes: 0 ok, 1 parity miss or runtime failure (after the report), 2 bad usage, 3 runtime unavailable,
    130 interrupted (the partial report is still printed and written).
    """
    import json

    from runtimes.bench import BenchConfig
    from runtimes.render import render_markdown, render_text
    from runtimes.suite import RuntimeOptions, SuiteConfig, run_bench

    if iterations is not None and duration is not None:
        raise click.BadParameter("give --iterations or --duration, not both", param_hint="--iterations")
    options = RuntimeOptions(threads=threads, graph_optimization=graph_optimization, device=device, compile=compile_,
                             allow_tf32=allow_tf32, cudnn_algo_search=cudnn_algo_search, cuda_graph=cuda_graph,
                             strict=not allow_cpu_nodes, engine_cache=str(engine_cache) if engine_cache else None,
                             workspace_mb=workspace_mb, opt_batch=opt_batch)
    config = SuiteConfig(
        runtimes=RUNTIME_NAMES if runtime == "all" else (runtime,), batch_sizes=batch_sizes,
        bench=BenchConfig(warmup_iters=warmup[0], warmup_s=warmup[1], iterations=iterations,
                          duration_s=duration or 2.0),
        options=options, skip_unavailable=runtime == "all", parity_samples=parity_samples, parity_images=images,
        seed=seed)
    report = run_bench(model, config, reference=reference, progress=_bench_progress(ctx.obj["progress"]))
    click.echo(render_text(report))
    for path, text in ((json_path, lambda: json.dumps(report.to_dict(), indent=2)),
                       (markdown_path, lambda: render_markdown(report))):
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text())
            click.echo(f"Wrote {path}")
    if report.interrupted:
        click.echo("Interrupted: the report holds the measurements made so far.", err=True)
        ctx.exit(EXIT_INTERRUPTED)
    if not report.passed:
        click.echo("Error: " + "\n  ".join(report.failures()), err=True)
        ctx.exit(1)


# ---- export ----

_EXPORT_PRECISIONS = ("fp32", "fp16", "int8")  # = export.spec.PRECISIONS (literal so --help needs no imports)
_EXPORT_LRN = ("conv", "native")               # = export.spec.LRN_FORMULATIONS


def _export_default_output(run: Path, precision: str) -> Path:
    folder = run if run.is_dir() else run.parent
    return folder / ("model.onnx" if precision == "fp32" else f"model.{precision}.onnx")


def _export_table(reports, accuracy: dict | None) -> list[str]:
    """The parity table (one row per input set) and the accuracy line, as printed by ``export``."""
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


@main.command("export")
@click.argument("run", type=click.Path(exists=True, path_type=Path))
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="ONNX file to write. Default: model.onnx (model.fp16.onnx, model.int8.onnx) next to the checkpoint.")
@click.option("--precision", type=click.Choice(_EXPORT_PRECISIONS), default="fp32", show_default=True,
              help="Precision written into the graph: fp16 keeps LRN and the I/O in fp32; int8 is symmetric Q/DQ.")
@click.option("--opset", type=int, default=20, show_default=True, help="ONNX opset (18–25).")
@click.option("--batch", type=click.IntRange(1, 256), default=None,
              help="Static batch size. Default: a symbolic 'batch' dimension (1–256).")
@click.option("--lrn", type=click.Choice(_EXPORT_LRN), default="conv", show_default=True,
              help="LRN formulation: conv (banded 1x1 Conv, fastest on ONNX Runtime) or native (one ONNX LRN node, "
                   "e.g. for TensorRT's LRN layer).")
@click.option("--calibration-data", type=click.Path(exists=True, file_okay=False, path_type=Path), default=None,
              help="int8: image folder to calibrate on. Default: the checkpoint's training images, else the built-in "
                   "data.")
@click.option("--calibration-images", type=click.IntRange(min=1), default=128, show_default=True,
              help="int8: number of calibration images.")
@click.option("--parity-images", type=click.IntRange(min=0), default=256, show_default=True,
              help="Most validation images (from the checkpoint's data folder, when present) for parity and "
                   "accuracy; 0 = fixed-seed random inputs only.")
@click.option("--atol", type=click.FloatRange(min=0), default=None,
              help="Override the absolute tolerance of the precision's default.")
@click.option("--rtol", type=click.FloatRange(min=0), default=None,
              help="Override the relative tolerance of the precision's default.")
@click.option("--keep-failed", is_flag=True,
              help="When parity fails, keep the file as <name>.failed.onnx for debugging.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Also write the export report as JSON.")
@click.option("--triton-repo", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Also place the exported file in this Triton model repository (as the triton command does, with "
                   "its defaults).")
@click.option("--triton-name", default=None,
              help="Triton model name. Default: alexnet (alexnet_fp16, alexnet_int8) by --precision.")
@click.pass_obj
def export(obj: dict, run: Path, output: Path | None, precision: str, opset: int, batch: int | None, lrn: str,
           calibration_data: Path | None, calibration_images: int, parity_images: int, atol: float | None,
           rtol: float | None, keep_failed: bool, json_path: Path | None, triton_repo: Path | None,
           triton_name: str | None) -> None:
    """Export a checkpoint (run folder or .safetensors) to a validated, parity-checked ONNX model.

    The file is written only when the ONNX checker, strict shape inference and parity with the PyTorch model (on
    fixed-seed random inputs and on the validation images, when available) all pass.
    """
    import json

    from export.errors import ParityError
    from export.exporter import export_onnx
    from export.spec import ExportSpec

    spec = ExportSpec(precision=precision, opset=opset, batch=batch, lrn=lrn, atol=atol, rtol=rtol)
    output = output or _export_default_output(run, precision)
    if triton_repo is not None:  # refuse an occupied model folder now, not after a minute of export
        from export.triton import check_free
        from export.triton_config import model_name

        check_free(triton_repo, [model_name(triton_name, precision)])
    progress = (lambda text: click.echo(f"[export] {text}", err=True)) if obj["progress"] else None
    try:
        result = export_onnx(run, output, spec, calibration_data=calibration_data,
                             calibration_images=calibration_images, parity_images=parity_images,
                             keep_failed=keep_failed, progress=progress)
    except ParityError as e:
        click.echo("\n".join(_export_table(e.reports, e.accuracy)), err=True)
        raise
    batch_text = f"static batch {result.batch}" if result.batch else "symbolic batch"
    click.echo(f"Exported {result.path} ({result.precision}, LRN {result.lrn}, opset {result.opset}, IR "
               f"{result.ir_version}, {batch_text}, {result.size_bytes / 2**20:.1f} MiB) in "
               f"{result.timings_s['total']:.1f} s")
    click.echo(f"sha256 {result.sha256}")
    click.echo("\n".join(_export_table(result.parity, result.accuracy)))
    if json_path is not None:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(result.to_dict(), indent=2) + "\n")
        click.echo(f"Wrote {json_path}")
    if triton_repo is not None:
        from export.triton import write_triton_repository
        from export.triton_config import TritonOptions

        options = TritonOptions(name=triton_name)
        _echo_triton(write_triton_repository(result.path, triton_repo, options,
                                             _triton_plan(result.path, None, None)))


# ---- pipeline ----



def _list_option(choices: tuple[str, ...], allow_all: bool):
    """A click callback parsing ``a,b`` (or ``all``) into a tuple of distinct ``choices``, in the given order."""
    def parse(ctx: click.Context, param: click.Parameter, value: str) -> tuple[str, ...]:
        items = [v.strip() for v in value.split(",") if v.strip()]
        if allow_all and items == ["all"]:
            return choices
        unknown = [v for v in items if v not in choices]
        valid = ", ".join(choices) + (" (or all)" if allow_all else "")
        if unknown or not items:
            raise click.BadParameter(f"expected a comma-separated list of {valid}; got {value!r}")
        if len(set(items)) != len(items):
            raise click.BadParameter(f"{value!r} names a value twice")
        return tuple(items)
    return parse


def _ignored_train_options(ctx: click.Context) -> list[str]:
    """Training options typed on the command line, which --checkpoint makes moot (--device also picks the torch
    runtime's device, so it still counts)."""
    from click.core import ParameterSource

    train_names = {p.name for p in train.params} - {"out", "overwrite", "resume", "device"}
    return [p.opts[0] for p in ctx.command.params if p.name in train_names
            and ctx.get_parameter_source(p.name) == ParameterSource.COMMANDLINE]


@main.command()
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Pipeline folder: train/ (the run), onnx/ (one file per precision), report/ (report.md, "
                   "report.json, plots). Default: runs/<timestamp>. A folder holding an earlier pipeline run is "
                   "refused (see --overwrite).")
@click.option("--overwrite", is_flag=True,
              help="Replace an earlier pipeline run in --out: its train/ run, onnx/ files and report/.")
@click.option("--checkpoint", type=click.Path(exists=True, path_type=Path), default=None,
              help="Skip training and use this run folder (or .safetensors); its recorded validation split gives "
                   "the task-parity images.")
@click.option("--runtimes", default="all", show_default=True, callback=_list_option(RUNTIME_NAMES, allow_all=True),
              help=f"Comma-separated runtimes ({', '.join(RUNTIME_NAMES)}) or all. Ones that cannot run here are "
                   "reported as skipped.")
@click.option("--precisions", default="fp32,fp16,int8", show_default=True,
              callback=_list_option(_EXPORT_PRECISIONS, allow_all=False),
              help="Comma-separated precisions to export, bench and check.")
@click.option("--batch-sizes", default="1,32", show_default=True, callback=_batch_sizes_option,
              help="Bench batch sizes (latency.png uses the smallest).")
@click.option("--warmup", default="0.3s", show_default=True, callback=_warmup_option,
              help="Warm-up per runtime, precision and batch size: N iterations or a duration such as 1s.")
@click.option("--duration", type=click.FloatRange(min=0, min_open=True), default=1.0, show_default=True,
              help="Timed seconds per runtime, precision and batch size (at least 5 iterations).")
@click.option("--task-images", type=click.IntRange(min=1), default=None,
              help="Validation images for task-level parity (top-1, agreement). Default: the whole split.")
@click.option("--calibration-images", type=click.IntRange(min=1), default=128, show_default=True,
              help="int8: calibration images (from the training images).")
@click.option("--parity-samples", type=click.IntRange(min=1), default=16, show_default=True,
              help="Fixed-seed random inputs each runtime is compared on (the validation images are compared too).")
@click.option("--threads", type=click.IntRange(min=1), default=None,
              help="CPU threads for torch and ONNX Runtime in the bench. Default: the cores this process may use.")
@_train_options()
@click.pass_context
def pipeline(ctx: click.Context, out: Path | None, checkpoint: Path | None, runtimes: tuple[str, ...],
             precisions: tuple[str, ...], batch_sizes: tuple[int, ...], warmup: tuple[int, float], duration: float,
             task_images: int | None, calibration_images: int, parity_samples: int, threads: int | None,
             **train_opts) -> None:
    """Train, export each precision, bench and check every runtime, and write one deployment report.

    Writes OUT/train/ (the run), OUT/onnx/model.<precision>.onnx and OUT/report/ (report.md, report.json,
    training.png, latency.png, throughput.png, bench.<precision>.json). The report is written whatever happens.

    Exit codes: 0 ok, 1 an export, parity check or runtime failed (after the report), 2 bad usage, 3 none of the
    requested runtimes can run here, 130 interrupted (the report holds what finished).
    """
    from runtimes.bench import BenchConfig
    from runtimes.factory import RuntimeOptions
    from runtimes.pipeline import PipelineConfig, PipelineProgress, run_pipeline
    from runtimes.pipeline_report import render_text

    train_config = _train_config(train_opts)
    if checkpoint is not None and (ignored := _ignored_train_options(ctx)):
        click.echo(f"Warning: --checkpoint skips training; ignoring {', '.join(ignored)}.", err=True)
    config = PipelineConfig(
        train=train_config, checkpoint=str(checkpoint) if checkpoint else None, out=str(out) if out else None,
        runtimes=runtimes, precisions=precisions, batch_sizes=batch_sizes,
        bench=BenchConfig(warmup_iters=warmup[0], warmup_s=warmup[1], duration_s=duration),
        options=RuntimeOptions(threads=threads, device=train_opts["device"]),
        calibration_images=calibration_images, parity_samples=parity_samples, task_images=task_images,
        overwrite=train_opts["overwrite"])
    shown = ctx.obj["progress"]
    progress = PipelineProgress(show_progress=shown, bench=_bench_progress(shown),
                                export=(lambda text: click.echo(f"[export] {text}", err=True)) if shown else None)
    result = run_pipeline(config, progress)
    click.echo(render_text(result.report))
    click.echo(f"Report: {result.report_dir / 'report.md'}  (+ report.json, plots)")
    if result.interrupted:
        click.echo(f"Interrupted during {result.report['interrupted_during']}: the report holds what finished.",
                   err=True)
        ctx.exit(EXIT_INTERRUPTED)
    if result.failures:
        click.echo("Error: " + "\n  ".join(result.failures), err=True)
        ctx.exit(1)
    if result.no_runtime:
        reasons = "\n  ".join(f"{name}: {why}" for name, why in result.skipped.items())
        click.echo(f"Error: none of the requested runtimes can run here:\n  {reasons}", err=True)
        ctx.exit(EXIT_UNAVAILABLE)


# ---- predict ----


@main.command()
@click.argument("model", type=click.Path(exists=True, path_type=Path))
@click.argument("images", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--runtime", type=click.Choice(RUNTIME_NAMES), default=None,
              help="Runtime to predict with. Default: onnxruntime for an ONNX file, torch for a checkpoint (the "
                   "only runtime a checkpoint can use).")
@click.option("--top-k", type=click.IntRange(min=1), default=None,
              help="Classes listed per image, most probable first (at most the model's class count). Default: 5, or "
                   "every class when the model has fewer.")
@click.option("--batch-size", type=click.IntRange(min=1), default=32, show_default=True,
              help="Images per inference call (an ONNX file with a static batch uses its own).")
@click.option("-r", "--recursive", is_flag=True,
              help="Expand folder arguments to the image files under them; without it a folder is reported as an "
                   "error.")
@click.option("--json", "as_json", is_flag=True,
              help="Print a JSON list instead of the table: {path, predictions: [{class, index, probability}]} or "
                   "{path, error} per input.")
@click.option("--device", default="auto", show_default=True, help="torch runtime: auto, cpu, cuda or cuda:N.")
@click.option("--threads", type=click.IntRange(min=1), default=None,
              help="CPU threads for torch and ONNX Runtime. Default: the cores this process may use.")
@click.pass_context
def predict(ctx: click.Context, model: Path, images: tuple[Path, ...], runtime: str | None, top_k: int | None,
            batch_size: int, recursive: bool, as_json: bool, device: str, threads: int | None) -> None:
    """Classify images with an exported ONNX file (MODEL.onnx) or a checkpoint (run folder or .safetensors).

    Images are preprocessed exactly as validation was (resize the shorter side to 227, center-crop, the model's
    mean/std from its metadata). A file that cannot be read (a folder without --recursive, a non-image, a corrupt
    image, a missing path) is reported on stderr and the others are still predicted.

    Exit codes: 0 all predicted, 1 any input failed (or a bad model), 2 bad usage, 3 runtime unavailable,
    130 interrupted (what was predicted so far is still printed).
    """
    import json

    from runtimes.factory import RuntimeOptions
    from runtimes.predict import (expand_inputs, make_predict_runtime, open_model, predict_images, table_header,
                                  table_rows)

    inputs = expand_inputs(images, recursive)
    spec = open_model(model)
    rt = make_predict_runtime(spec, runtime, RuntimeOptions(threads=threads, device=device), batch_size)
    path_width = max(len("image"), *(len(p) for p, _ in inputs))
    class_width = max(len("class"), *(len(n) for n in spec.class_names))
    predictions = predict_images(rt, spec, inputs, top_k, batch_size)  # checks --top-k before the runtime loads
    results, interrupted = [], False
    try:
        with rt:
            for result in predictions:
                if not result.ok:
                    click.echo(f"Error: {result}", err=True)
                elif not as_json:
                    if not any(r.ok for r in results):  # the header over the first row; none when all failed
                        click.echo(table_header(path_width, class_width))
                    click.echo("\n".join(table_rows(result, path_width, class_width)))
                results.append(result)
    except KeyboardInterrupt:
        interrupted = True
    if as_json:
        click.echo(json.dumps([r.to_dict() for r in results], indent=2))
    failed = sum(not r.ok for r in results)
    click.echo(f"Predicted {len(results) - failed} of {len(inputs)} input(s) with {rt.name} ({rt.precision}, "
               f"{rt.device})" + (f"; {failed} failed (listed above)" if failed else "") + ".", err=True)
    if interrupted:
        click.echo("Interrupted.", err=True)
        ctx.exit(EXIT_INTERRUPTED)
    ctx.exit(1 if failed else 0)


# ---- triton ----

def _triton_plan(onnx_path: Path, plan: Path | None, engine_cache: Path | None):
    """``--plan``, else the newest engine in the cache built from this exact file, else None."""
    from export.triton_config import PlanFile

    if plan is not None:
        return PlanFile.from_path(plan)
    from runtimes.trt_engine import find_engines
    from runtimes.trt_runtime import default_engine_cache
    from trainer.fileio import sha256_file

    # The cache keys engines by runtimes.onnx_info.model_sha256, which is the file's sha256 for a self-contained
    # file; the repository writer refuses files with external data anyway.
    engines = find_engines(engine_cache or default_engine_cache(), sha256_file(onnx_path))
    if len(engines) > 1:
        click.echo(f"Note: {len(engines)} cached TensorRT engines were built from {onnx_path.name}; using the newest, "
                   f"{engines[0][0]}", err=True)
    return PlanFile(*engines[0]) if engines else None


def _echo_triton(result) -> None:
    click.echo(f"Wrote Triton model repository {result.repo}:")
    for model in result.models:
        c = model.config
        batching = (f"max_batch_size {c.max_batch_size}, preferred batches {list(c.preferred_batch_sizes)}"
                    if c.max_batch_size else "max_batch_size 0 (static batch: no dynamic batching)")
        click.echo(f"  {c.name}: {c.platform}, {batching}, {c.instance_count} x {c.instance_kind}")
        click.echo("\n".join(f"    {path}" for path in model.files))
    for note in result.notes:
        click.echo(f"Note: {note}", err=True)
    click.echo(f"Serve it with: tritonserver --model-repository={result.repo.resolve()}")


@main.command()
@click.argument("model", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--repo", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Model repository folder (created if needed; other models in it are left alone).")
@click.option("--name", default=None,
              help="Model name. Default: alexnet (alexnet_fp16, alexnet_int8) by the file's precision; the TensorRT "
                   "variant adds _trt.")
@click.option("--instances", type=click.IntRange(min=1), default=1, show_default=True,
              help="Model instances (per GPU for GPU instances).")
@click.option("--kind", type=click.Choice(["auto", "cpu", "gpu"]), default="auto", show_default=True,
              help="Where the ONNX model's instances run (auto: the GPU when there is one). The TensorRT variant "
                   "always runs on the GPU.")
@click.option("--max-batch", type=click.IntRange(min=1), default=None,
              help="max_batch_size of a symbolic-batch model. Default: 256, the exporter's batch bound (for the "
                   "TensorRT variant at most its engine profile's max).")
@click.option("--max-queue-delay", type=click.IntRange(min=0), default=100, show_default=True,
              help="Dynamic batching: longest wait, in microseconds, for more requests to join a batch.")
@click.option("--plan", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="A TensorRT engine built from MODEL, written as <name>_trt. Default: the newest engine in the "
                   "engine cache built from this exact file, if any.")
@click.option("--engine-cache", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Engine cache searched for an engine. Default: ~/.cache/alexnet-deploy/trt-engines.")
@click.option("--no-plan", is_flag=True, help="Write only the ONNX Runtime model, even when an engine exists.")
@click.option("--overwrite", is_flag=True, help="Replace existing model folders of the same name.")
def triton(model: Path, repo: Path, name: str | None, instances: int, kind: str, max_batch: int | None,
           max_queue_delay: int, plan: Path | None, engine_cache: Path | None, no_plan: bool, overwrite: bool) -> None:
    """Write a Triton Inference Server model repository for an exported ONNX file (and its TensorRT engine).

    REPO/<name>/config.pbtxt, REPO/<name>/labels.txt and REPO/<name>/1/model.onnx for the onnxruntime backend, plus
    REPO/<name>_trt/ with 1/model.plan when a TensorRT engine exists. Each model folder appears complete or not at all.
    """
    from export.triton import write_triton_repository
    from export.triton_config import TritonOptions

    if plan is not None and no_plan:
        raise click.BadParameter("give --plan or --no-plan, not both", param_hint="--plan")
    options = TritonOptions(name=name, max_batch=max_batch, instances=instances, kind=kind,
                            max_queue_delay_us=max_queue_delay, overwrite=overwrite)
    engine = None if no_plan else _triton_plan(model, plan, engine_cache)
    _echo_triton(write_triton_repository(model, repo, options, engine))


if __name__ == "__main__":
    main()
