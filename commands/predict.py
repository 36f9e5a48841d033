"""predict: image files → top-k classes with an exported ONNX file or a checkpoint."""
from __future__ import annotations

import json
from pathlib import Path

import click

from commands import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK
from commands.options import MISMATCH_OPTION
from core.contract import MAX_BATCH
from runtimes.registry import RUNTIME_NAMES


@click.command()
@click.argument("model", type=click.Path(exists=True, path_type=Path))
@click.argument("images", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--runtime", type=click.Choice(RUNTIME_NAMES), default=None,
              help="Runtime to predict with. Default: onnxruntime for an ONNX file, torch for a checkpoint (the "
                   "only runtime a checkpoint can use).")
@click.option("--precision", type=click.Choice(["auto", "bf16"]), default="auto", show_default=True,
              help="auto: the model's own precision; bf16: bf16 arithmetic on an fp32 model (openvino, torch).")
@click.option("--top-k", type=click.IntRange(min=1), default=None,
              help="Classes listed per image, most probable first (at most the model's class count). Default: 5, or "
                   "every class when the model has fewer.")
@click.option("--batch-size", type=click.IntRange(1, MAX_BATCH), default=32, show_default=True,
              help="Images per inference call (an ONNX file with a static batch uses its own).")
@click.option("-r", "--recursive", is_flag=True,
              help="Expand folder arguments to the image files under them; without it a folder is reported as an "
                   "error.")
@click.option("--json", "as_json", is_flag=True,
              help="Print a JSON list instead of the table: {path, predictions: [{class, index, probability}]} or "
                   "{path, error} per input.")
@click.option("--device", default="auto", show_default=True,
              help="torch: auto, cpu, cuda or cuda:N; openvino: CPU (auto), GPU or NPU.")
@click.option("--threads", type=click.IntRange(1, 1024), default=None,
              help="CPU threads for torch, ONNX Runtime and OpenVINO. Default: the cores this process may use.")
@MISMATCH_OPTION
@click.pass_context
def predict(ctx: click.Context, model: Path, images: tuple[Path, ...], runtime: str | None, precision: str,
            top_k: int | None, batch_size: int, recursive: bool, as_json: bool, device: str, threads: int | None,
            allow_checkpoint_mismatch: bool) -> None:
    """Classify images with an exported ONNX file (MODEL.onnx) or a checkpoint (run folder or .safetensors).

    Images are preprocessed exactly as validation was (resize the shorter side to 227, center-crop, the model's
    mean/std from its metadata). A file that cannot be read (a folder without --recursive, a non-image, a corrupt
    image, a missing path, a pipe) is reported on stderr and the others are still predicted.

    Exit codes: 0 all predicted, 1 any input failed (or a bad model), 2 bad usage, 3 runtime unavailable,
    130 interrupted (what was predicted so far is still printed).
    """
    from deploy.predict.predict import (expand_inputs, make_predict_runtime, open_model, predict_images, table_header,
                                table_rows)
    from runtimes.options import RuntimeOptions

    inputs = expand_inputs(images, recursive)
    spec = open_model(model)
    options = RuntimeOptions(threads=threads, device=device, precision=None if precision == "auto" else precision)
    rt = make_predict_runtime(spec, runtime, options, batch_size, allow_checkpoint_mismatch)
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
    ctx.exit(EXIT_FAILED if failed else EXIT_OK)
