"""triton: a Triton Inference Server model repository for an exported ONNX file (and its TensorRT engine)."""
from __future__ import annotations

from pathlib import Path

import click


def write_triton(model: Path, repo: Path, plan: Path | None = None, engine_cache: Path | None = None,
                 no_plan: bool = False, **options) -> None:
    """Write the repository (also used by ``export --triton-repo``) and print what it holds."""
    from deploy.render import triton_summary
    from deploy.triton.repository import find_plan, write_triton_repository
    from deploy.triton.config import TritonOptions

    engine, note = (None, None) if no_plan else find_plan(model, plan, engine_cache)
    if note:
        click.echo(f"Note: {note}", err=True)
    lines, notes = triton_summary(write_triton_repository(model, repo, TritonOptions(**options), engine))
    click.echo("\n".join(lines))
    for line in notes:
        click.echo(line, err=True)


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
@click.option("--overwrite", is_flag=True, help="Replace existing model folders of the same name.")
def triton(model: Path, repo: Path, name: str | None, instances: int, kind: str, max_batch: int | None,
           max_queue_delay: int, plan: Path | None, engine_cache: Path | None, no_plan: bool, openvino: bool,
           bf16: bool, overwrite: bool) -> None:
    """Write a Triton Inference Server model repository for an exported ONNX file (and its TensorRT engine).

    REPO/<name>/config.pbtxt, REPO/<name>/labels.txt and REPO/<name>/1/model.onnx for the onnxruntime backend, plus
    REPO/<name>_openvino/ (--openvino) for the openvino backend and REPO/<name>_trt/ with 1/model.plan when a TensorRT
    engine exists. Each model folder appears complete or not at all.
    """
    if plan is not None and no_plan:
        raise click.BadParameter("give --plan or --no-plan, not both", param_hint="--plan")
    if bf16 and not openvino:
        raise click.BadParameter("--bf16 sets the OpenVINO model's precision: add --openvino", param_hint="--bf16")
    write_triton(model, repo, plan, engine_cache, no_plan, name=name, max_batch=max_batch, instances=instances,
                 kind=kind, max_queue_delay_us=max_queue_delay, overwrite=overwrite, openvino=openvino, bf16=bf16)
