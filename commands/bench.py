"""bench: one ONNX file on every runtime × batch size, parity-checked."""
from __future__ import annotations

import json
from pathlib import Path

import click

from commands import EXIT_FAILED, EXIT_INTERRUPTED
from commands.options import (MISMATCH_OPTION, ROUNDS_OPTION, RUNTIMES_OPTION, SECONDS, batch_sizes, finish_gate,
                              gate_options, runtime_options, warmup, write_reports)
from runtimes.registry import RUNTIME_NAMES


@click.command()
@click.argument("model", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@RUNTIMES_OPTION
@click.option("--precision", type=click.Choice(["auto", "bf16"]), default="auto", show_default=True,
              help="auto: the graph's own precision; bf16: run an fp32 graph with bf16 arithmetic on the runtimes "
                   "that compute it natively (the others are skipped with the reason).")
@click.option("--batch-sizes", default="1,8,32", show_default=True, callback=batch_sizes,
              help="Comma-separated batch sizes, swept in one run.")
@click.option("--warmup", default="1s", show_default=True, callback=warmup,
              help="Warm-up before timing, per runtime and batch size: N iterations, or a duration such as 2s.")
@click.option("--iterations", type=click.IntRange(1, 1_000_000), default=None,
              help="Timed iterations per runtime and batch size (instead of --duration).")
@click.option("--duration", type=SECONDS, default=None,
              help="Timed seconds per runtime and batch size (at least 5 iterations), split over --rounds. "
                   "Default: 2 s.")
@ROUNDS_OPTION
@click.option("--reference", type=click.Path(exists=True, path_type=Path), default=None,
              help="PyTorch reference checkpoint (run folder or .safetensors). Default: the checkpoint named in the "
                   "ONNX metadata when present, else ONNX Runtime CPU on the same file.")
@MISMATCH_OPTION
@click.option("--device", default="auto", show_default=True,
              help="Device of the torch runtime and reference: auto, cpu, cuda or cuda:N.")
@click.option("--threads", type=click.IntRange(1, 1024), default=None,
              help="CPU threads for torch, ONNX Runtime and OpenVINO. Default: the cores this process may use.")
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
@click.option("--workspace-mb", type=click.IntRange(16, 1 << 20), default=1024, show_default=True,
              help="tensorrt: builder workspace limit in MiB.")
@click.option("--optimization-level", type=click.IntRange(0, 5), default=None,
              help="tensorrt: builder optimisation level (default TensorRT's 3; lower builds faster).")
@click.option("--parity-samples", type=click.IntRange(1, 100_000), default=16, show_default=True,
              help="Fixed-seed random inputs compared with the reference.")
@click.option("--images", type=click.IntRange(0, 100_000), default=64, show_default=True,
              help="Real validation images compared with the reference (from the data named in the ONNX metadata; "
                   "0 = none).")
@click.option("--seed", type=click.IntRange(0, 2**32 - 1), default=0, show_default=True,
              help="Seed of the random inputs.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write the full report as JSON.")
@click.option("--markdown", "markdown_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write the report as a Markdown table.")
@gate_options("A bench --json (or pipeline report.json) to compare with: exit 1 when a row shared by both is slower "
              "than --max-slowdown, fails parity that passed, or lost top-1 (the report is written first).")
@click.pass_context
def bench(ctx: click.Context, model: Path, runtimes: tuple[str, ...], precision: str, **opts) -> None:
    """Benchmark an ONNX model on PyTorch, ONNX Runtime (CPU/CUDA), OpenVINO and TensorRT, parity-checked.

    Exit codes: 0 ok, 1 parity miss, runtime failure or --baseline regression (after the report), 2 bad usage
    (including a --baseline that is not a bench/pipeline report), 3 a named runtime is not available here, 4 a
    --baseline row neither within nor beyond --max-slowdown with 95% confidence (unless --inconclusive pass), 130
    interrupted (the partial report is still printed and written).
    """
    from core.fileio import check_not_an_input, check_writable
    from deploy.bench.bench import BenchPlan, run_bench
    from deploy.progress import progress_for
    from deploy.bench.gate import compare, load_baseline
    from deploy.bench.render import gate_failure, gate_markdown, gate_text, render_markdown, render_text
    from deploy.bench.timing import BenchConfig

    if opts["iterations"] is not None and opts["duration"] is not None:
        raise click.BadParameter("give --iterations or --duration, not both", param_hint="--iterations")
    inputs = {"the model": model, "the baseline": opts["baseline"]}
    if opts["reference"] is not None:  # a run folder: its weights are the input, not the folder
        from trainer.checkpoint import checkpoint_files

        inputs.update(checkpoint_files(opts["reference"]))
    for flag, path in (("--json", opts["json_path"]), ("--markdown", opts["markdown_path"])):
        if path is not None:
            check_not_an_input(path, inputs, flag)
            check_writable(path, flag)  # now, not after minutes of measuring
            inputs[f"the {flag} report"] = path  # one file cannot hold both reports
    baseline = load_baseline(opts["baseline"]) if opts["baseline"] else None  # a bad one fails before the bench
    plan = BenchPlan(
        runtimes=runtimes, batch_sizes=opts["batch_sizes"],
        timing=BenchConfig(warmup_iters=opts["warmup"][0], warmup_s=opts["warmup"][1], iterations=opts["iterations"],
                           duration_s=opts["duration"] or 2.0, rounds=opts["rounds"]),
        options=runtime_options(opts, precision=None if precision == "auto" else precision),
        skip_unavailable=runtimes == RUNTIME_NAMES, parity_samples=opts["parity_samples"],
        parity_images=opts["images"], seed=opts["seed"], allow_checkpoint_mismatch=opts["allow_checkpoint_mismatch"])
    report = run_bench(model, plan, reference=opts["reference"], progress=progress_for(ctx.obj["progress"]))
    data = report.to_dict()
    gate = None if baseline is None else compare(baseline, data, opts["max_slowdown"],
                                                 opts["max_accuracy_drop"]).to_dict()
    click.echo(render_text(report))
    if gate is not None:
        click.echo("\n" + gate_text(gate))
    write_reports({opts["json_path"]: lambda: json.dumps({**data, "gate": gate}, indent=2) + "\n",
                   opts["markdown_path"]: lambda: render_markdown(report)
                   + ("\n".join(gate_markdown(gate)) + "\n" if gate else "")})
    if report.interrupted:
        click.echo("Interrupted: the report holds the measurements made so far.", err=True)
        ctx.exit(EXIT_INTERRUPTED)
    failures = [] if report.passed else report.failures()
    if failures:
        click.echo("Error: " + "\n  ".join(failures + ([gate_failure(gate)] if gate and gate["outcome"] == "fail"
                                                      else [])), err=True)
        ctx.exit(EXIT_FAILED)
    finish_gate(ctx, gate, opts["inconclusive"])

