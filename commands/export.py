"""export: checkpoint → validated ONNX file."""
from __future__ import annotations

from pathlib import Path

import click

from commands.triton import write_triton
from core.contract import EXPORT_PRECISIONS, LRN_FORMULATIONS, MAX_BATCH

CALIBRATION_METHODS = ("minmax", "entropy", "percentile")  # export/calibration.py METHODS (not imported: onnx)

@click.command("export")
@click.argument("run", type=click.Path(exists=True, path_type=Path))
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="ONNX file to write. Default: model.onnx (model.fp16.onnx, model.int8.onnx) next to the checkpoint.")
@click.option("--precision", type=click.Choice(EXPORT_PRECISIONS), default="fp32", show_default=True,
              help="Precision written into the graph: fp16 keeps LRN and the I/O in fp32; int8 is symmetric Q/DQ. "
                   "(bf16 needs no file of its own: runtimes run the fp32 file in bf16.)")
@click.option("--opset", type=click.IntRange(18, 25), default=20, show_default=True, help="ONNX opset (18–25).")
@click.option("--batch", type=click.IntRange(1, MAX_BATCH), default=None,
              help=f"Static batch size. Default: a symbolic 'batch' dimension (1–{MAX_BATCH}).")
@click.option("--lrn", type=click.Choice(LRN_FORMULATIONS), default="conv", show_default=True,
              help="LRN formulation: conv (banded 1x1 Conv, fastest on ONNX Runtime) or native (one ONNX LRN node, "
                   "fastest on OpenVINO and TensorRT).")
@click.option("--calibration-data", type=click.Path(exists=True, file_okay=False, path_type=Path), default=None,
              help="int8: image folder to calibrate on. Default: the checkpoint's training images, else the built-in "
                   "data.")
@click.option("--calibration-images", type=click.IntRange(1, 100_000), default=512, show_default=True,
              help="int8: the most calibration images; each method uses as many as its ranges need to stop moving "
                   "(measured: within 5 % over two doublings).")
@click.option("--calibration-method", type=click.Choice(("auto", *CALIBRATION_METHODS)), default="auto",
              show_default=True,
              help="int8: auto measures MinMax, Entropy and Percentile on the validation images and keeps the most "
                   "accurate; or only the one named.")
@click.option("--max-accuracy-drop", type=click.FloatRange(min=0, max=100), default=None,
              help="Most validation top-1 points the file may lose against PyTorch fp32 (default: the precision's, "
                   "export/spec.py; at least one image). int8 keeps the fewest layers in fp32 that meet it, or exits "
                   "1 writing nothing.")
@click.option("--parity-images", type=click.IntRange(0, 100_000), default=256, show_default=True,
              help="Most validation images (from the checkpoint's data folder, when present) for parity and "
                   "accuracy; 0 = fixed-seed random inputs only.")
@click.option("--atol", type=click.FloatRange(min=0, max=1e6), default=None,
              help="Override the absolute tolerance of the precision's default.")
@click.option("--rtol", type=click.FloatRange(min=0, max=1e6), default=None,
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
           calibration_data: Path | None, calibration_images: int, calibration_method: str,
           max_accuracy_drop: float | None, parity_images: int, atol: float | None,
           rtol: float | None, keep_failed: bool, json_path: Path | None, triton_repo: Path | None,
           triton_name: str | None) -> None:
    """Export a checkpoint (run folder or .safetensors) to a validated, parity-checked ONNX model.

    The file is written only when the ONNX checker, strict shape inference and parity with the PyTorch model (on
    fixed-seed random inputs and on the validation images, when available) all pass.
    """
    from core.fileio import check_not_an_input, check_writable, write_json_atomic
    from deploy.render import export_summary, export_table
    from export.errors import ParityError
    from export.exporter import default_output, export_onnx
    from export.spec import ExportSpec
    from trainer.checkpoint import checkpoint_files

    spec = ExportSpec(precision=precision, opset=opset, batch=batch, lrn=lrn, atol=atol, rtol=rtol,
                      max_accuracy_drop=max_accuracy_drop)
    methods = CALIBRATION_METHODS if calibration_method == "auto" else (calibration_method,)
    output = output or default_output(run, precision, lrn)
    if json_path is not None:  # checked now, not after a minute of export
        check_not_an_input(json_path, {**checkpoint_files(run), "the ONNX output": output}, "--json")
        check_writable(json_path, "--json")
    if triton_repo is not None:  # refuse an occupied model folder now, not after a minute of export
        from deploy.triton.repository import check_free
        from deploy.triton.config import model_name

        check_free(triton_repo, [model_name(triton_name, precision)])
    progress = (lambda text: click.echo(f"[export] {text}", err=True)) if obj["progress"] else None
    try:
        result = export_onnx(run, output, spec, calibration_data=calibration_data,
                             calibration_images=calibration_images, calibration_methods=methods,
                             parity_images=parity_images,
                             keep_failed=keep_failed, progress=progress)
    except ParityError as e:
        click.echo("\n".join(export_table(e.reports, e.accuracy)), err=True)
        raise
    click.echo("\n".join(export_summary(result) + int8_lines(result.quantization)))
    if json_path is not None:
        write_json_atomic(json_path, result.to_dict())
        click.echo(f"Wrote {json_path}")
    if triton_repo is not None:
        write_triton(result.path, triton_repo, name=triton_name)


def int8_lines(choice: dict | None) -> list[str]:
    """The int8 search in a few lines: the choice, then each candidate measured (export/int8_search.py)."""
    if not choice:
        return []
    result, calibration = choice["result"], choice["calibration"]
    kept = ", ".join(choice["kept_fp32"]) or "none"
    images = ", ".join(f"{m} {n}{'' if calibration['settled'][m] else ' (not settled)'}"
                       for m, n in calibration["images"].items())
    lines = [f"int8: {choice['method']} calibration, layers kept in fp32: {kept}; calibration images used: {images}"]
    if result is None:
        return lines + ["int8: no labelled validation images: accuracy not measured, MinMax used"]
    lines.append(f"int8: top-1 {result['accuracy']:.2%} vs fp32 {result['reference_accuracy']:.2%} "
                 f"({result['drop_points']:+.2f} points lost, budget {choice['max_accuracy_drop_points']:g}) on "
                 f"{result['images']} validation images")
    lines.append(f"{'candidate':<44} {'step':<9} {'top-1':>7} {'drop':>6} {'agree':>7} {'logit err':>9} {'img/s':>6}")
    for c in choice["candidates"]:
        label = c["method"] + (f", fp32: {', '.join(c['kept_fp32'])}" if c["kept_fp32"] else "")
        speed = "-" if c["onnxruntime_img_s"] is None else f"{c['onnxruntime_img_s']:.0f}"
        lines.append(f"{label:<44} {c['step']:<9} {c['accuracy']:>7.2%} {c['drop_points']:>6.2f} "
                     f"{c['agreement']:>7.2%} {c['logit_error']:>9.4f} {speed:>6}")
    return lines
