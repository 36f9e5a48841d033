"""triton: a Triton Inference Server model repository for an exported ONNX file (and its TensorRT engine)."""
from __future__ import annotations

from pathlib import Path

import click


def write_triton(model: Path, repo: Path, plan: Path | None = None, engine_cache: Path | None = None,
                 no_plan: bool = False, capacity: Path | None = None, **options) -> None:
    """Write the repository (also used by ``export --triton-repo``) and print what it holds."""
    from deploy.render import triton_summary
    from deploy.triton.repository import find_plan, write_triton_repository
    from deploy.triton.config import TritonOptions

    engine, note = (None, None) if no_plan else find_plan(model, plan, engine_cache)
    if note:
        click.echo(f"Note: {note}", err=True)
    triton_options = TritonOptions(**options)
    measured, notes = measured_configs(capacity, model, triton_options, engine is not None)
    for line in notes:
        click.echo(f"Note: {line}", err=True)
    lines, notes = triton_summary(write_triton_repository(model, repo, triton_options, engine, measured))
    click.echo("\n".join(lines))
    for line in notes:
        click.echo(line, err=True)


def measured_configs(capacity: Path | None, model: Path, options, plan: bool) -> tuple[dict, list[str]]:
    """Backend → the configuration capacity.json measured on this very file (by sha256), and a note per backend
    written without one.

    Raises:
        CapacityFileError: not a capacity report, or none of its answers is for this file.
    """
    if capacity is None:
        return {}, []
    from core.fileio import sha256_file
    from core.onnx_file import read_onnx_info
    from deploy.triton.measured import CapacityFileError, load_capacity, measured_for

    report, sha256 = load_capacity(capacity), sha256_file(model)
    own = read_onnx_info(model).precision
    wanted = {"onnxruntime": own, **({"openvino": "bf16" if options.bf16 else own} if options.openvino else {}),
              **({"tensorrt": own} if plan else {})}
    found = {backend: m for backend, precision in wanted.items()
             if (m := measured_for(report, str(capacity), sha256, backend, precision)) is not None}
    if not found:
        raise CapacityFileError(f"--capacity {capacity} holds no VALID Server answer for {model.name} (sha256 "
                                f"{sha256[:12]}…) on {', '.join(f'{b} {p}' for b, p in wanted.items())}; measure "
                                "this file with `cli.py capacity`")
    notes = [f"no capacity measurement of {b} {p} on {model.name} in {capacity}: its model keeps the defaults"
             for b, p in wanted.items() if b not in found]
    return found, notes


@click.command()
@click.argument("model", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--repo", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Model repository folder (created if needed; other models in it are left alone).")
@click.option("--name", default=None,
              help="Model name. Default: alexnet (alexnet_fp16, alexnet_int8) by the file's precision; the TensorRT "
                   "variant adds _trt.")
@click.option("--instances", type=click.IntRange(1, 1024), default=1, show_default=True,
              help="Model instances (per GPU for GPU instances).")
@click.option("--kind", type=click.Choice(["auto", "cpu", "gpu"]), default="auto", show_default=True,
              help="Where the ONNX model's instances run (auto: the GPU when there is one). The TensorRT variant "
                   "always runs on the GPU.")
@click.option("--max-batch", type=click.IntRange(min=1), default=None,
              help="max_batch_size of a symbolic-batch model. Default: 256, the exporter's batch bound (for the "
                   "TensorRT variant at most its engine profile's max).")
@click.option("--max-queue-delay", type=click.IntRange(0, 60_000_000), default=100, show_default=True,
              help="Dynamic batching: longest wait, in microseconds, for more requests to join a batch.")
@click.option("--plan", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="A TensorRT engine built from MODEL, written as <name>_trt. Default: the newest engine in the "
                   "engine cache built from this exact file, if any.")
@click.option("--engine-cache", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Engine cache searched for an engine. Default: ~/.cache/alexnet-deploy/trt-engines.")
@click.option("--no-plan", is_flag=True, help="Write no TensorRT model, even when an engine exists.")
@click.option("--openvino", is_flag=True,
              help="Also write <name>_openvino: the same file on Triton's OpenVINO backend (CPU instances, latency "
                   "hint), the fastest CPU serving measured here.")
@click.option("--bf16", is_flag=True, help="The OpenVINO model computes in bf16 (HINT_BF16; CPUs with native bf16).")
@click.option("--capacity", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="A capacity.json from `cli.py capacity` on this file: each backend it measured gets the "
                   "measured max batch, preferred batch size, queue delay, instance count and threads (the config's "
                   "comment names the measurement) instead of --max-batch, --max-queue-delay and --instances.")
@click.option("--overwrite", is_flag=True, help="Replace existing model folders of the same name.")
@click.pass_context
def triton(ctx: click.Context, model: Path, repo: Path, name: str | None, instances: int, kind: str,
           max_batch: int | None, max_queue_delay: int, plan: Path | None, engine_cache: Path | None, no_plan: bool,
           openvino: bool, bf16: bool, capacity: Path | None, overwrite: bool) -> None:
    """Write a Triton Inference Server model repository for an exported ONNX file (and its TensorRT engine).

    REPO/<name>/config.pbtxt, REPO/<name>/labels.txt and REPO/<name>/1/model.onnx for the onnxruntime backend, plus
    REPO/<name>_openvino/ (--openvino) for the openvino backend and REPO/<name>_trt/ with 1/model.plan when a TensorRT
    engine exists. Each model folder appears complete or not at all. With --capacity, each backend that `cli.py
    capacity` measured on this file gets the measured batching, instances and threads, named in the config's comment.
    """
    if plan is not None and no_plan:
        raise click.BadParameter("give --plan or --no-plan, not both", param_hint="--plan")
    if bf16 and not openvino:
        raise click.BadParameter("--bf16 sets the OpenVINO model's precision: add --openvino", param_hint="--bf16")
    if capacity is not None:
        from click.core import ParameterSource

        given = [f"--{n.replace('_', '-')}" for n in ("instances", "max_batch", "max_queue_delay")
                 if ctx.get_parameter_source(n) == ParameterSource.COMMANDLINE]
        if given:
            raise click.BadParameter(f"--capacity sets what {', '.join(given)} would: give one or the other",
                                     param_hint="--capacity")
    write_triton(model, repo, plan, engine_cache, no_plan, capacity, name=name, max_batch=max_batch,
                 instances=instances, kind=kind, max_queue_delay_us=max_queue_delay, overwrite=overwrite,
                 openvino=openvino, bf16=bf16)
