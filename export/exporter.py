"""export_onnx: checkpoint → one self-contained, validated, parity-checked ONNX file (fp32, fp16 or int8)."""
from __future__ import annotations

import contextlib
import logging
import os
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import onnx
import torch

from export import lrn as lrn_forms
from export.errors import ExportError, ParityError
from core.contract import INPUT_SHAPE, MAX_BATCH
from core.errors import ToolkitError, first_line
from core.fileio import atomic_path, check_not_an_input, check_writable, sha256_file
from core.onnx_file import OnnxMeta, write_metadata
from export.calibration import METHODS
from export.evaluate import onnx_logits, torch_logits
from export.images import DataSource, ImageSet, calibration_set, validation_images
from export.int8_search import SearchConfig, search_int8
from export.precision import convert_to_fp16, count_ops
from export.spec import ExportSpec, ir_version_for
from export.validate import validate_onnx
from runtimes.ort_runtime import OrtRuntime
from runtimes.parity import ParityReport, compare_outputs
from trainer.checkpoint import checkpoint_files, load_checkpoint, resolve_checkpoint

log = logging.getLogger(__name__)

RANDOM_SAMPLES = 16      # fixed-seed N(0, 1) inputs: cover every logit path without needing any data
RANDOM_SEED = 20120101   # fixed so that reports from different runs and machines compare like with like


@dataclass(frozen=True)
class ExportResult:
    """What ``export_onnx`` wrote and how it was checked."""
    path: Path
    sha256: str
    precision: str
    lrn: str
    opset: int
    ir_version: int
    batch: int | None                    # None = symbolic batch
    size_bytes: int
    checkpoint: Path
    parity: tuple[ParityReport, ...]     # random inputs first, then images when available
    accuracy: dict[str, float] | None    # {"reference", "onnx", "images"}: validation top-1, fp32 torch vs this file
    timings_s: dict[str, float] = field(default_factory=dict)
    ops: dict[str, int] = field(default_factory=dict)
    quantization: dict | None = None     # int8: what export/int8_search.py measured and chose

    def to_dict(self) -> dict:
        return {"path": str(self.path), "sha256": self.sha256, "precision": self.precision, "lrn": self.lrn,
                "opset": self.opset, "ir_version": self.ir_version, "batch": self.batch, "size_bytes": self.size_bytes,
                "checkpoint": str(self.checkpoint), "parity": [r.to_dict() for r in self.parity],
                "accuracy": self.accuracy, "timings_s": self.timings_s, "ops": self.ops,
                "quantization": self.quantization}

    def __str__(self) -> str:
        acc = (f", accuracy {self.accuracy['onnx']:.2%} vs fp32 {self.accuracy['reference']:.2%}"
               if self.accuracy else "")
        return (f"{self.path} ({self.precision}, LRN {self.lrn}, opset {self.opset}, "
                f"{self.size_bytes / 2**20:.1f} MiB): parity passed{acc}")


def default_output(checkpoint: str | os.PathLike, precision: str, lrn: str = "conv") -> Path:
    """Next to the checkpoint: model.onnx for fp32, model.<precision>.onnx otherwise (``.native-lrn`` for that form)."""
    folder = Path(checkpoint) if Path(checkpoint).is_dir() else Path(checkpoint).parent
    stem = "model" if precision == "fp32" else f"model.{precision}"
    return folder / (f"{stem}.onnx" if lrn == "conv" else f"{stem}.{lrn}-lrn.onnx")


def export_onnx(checkpoint_path: str | os.PathLike, out_path: str | os.PathLike, spec: ExportSpec = ExportSpec(), *,
                calibration_data: str | os.PathLike | None = None, calibration_images: int = 512,
                calibration_methods: tuple[str, ...] = METHODS, parity_images: int = 256, keep_failed: bool = False,
                progress: Callable[[str], None] | None = None) -> ExportResult:
    """Export a checkpoint to ONNX, validate the file, check parity with PyTorch, and only then move it into place.

    Args:
        checkpoint_path: A run folder (its final ``model.safetensors``) or a ``.safetensors`` checkpoint.
        out_path: Where the ``.onnx`` file goes; nothing is written there unless every check passes.
        spec: Precision, opset, batch, LRN formulation and tolerance.
        calibration_data: int8 only: an image folder to calibrate on (default: the checkpoint's training images,
            else the built-in data).
        calibration_images: int8 only: the most images to calibrate on (each method uses as many as its ranges need
            to settle, export/calibration.py).
        calibration_methods: int8 only: the calibration methods to measure (the most accurate is chosen).
        parity_images: Most validation images used for real-image parity and accuracy (0 = random inputs only).
        keep_failed: On a parity failure keep the file as ``<name>.failed.onnx`` for debugging.
        progress: Called with a short description as each stage starts.

    Raises:
        ExportError: bad spec, unwritable output, unexportable model, invalid graph or no calibration images.
        CheckpointError: missing or corrupt checkpoint, or metadata that does not match the weights.
        ParityError: the file missed its tolerance (``reports`` says where).
        Int8BudgetError: no int8 graph met the accuracy budget (nothing is written).
    """
    step = progress or (lambda message: None)
    timings: dict[str, float] = {}
    try:
        spec.validate()
    except ValueError as e:
        raise ExportError(str(e)) from None
    out_path, weights = Path(out_path), resolve_checkpoint(checkpoint_path)
    check_not_an_input(out_path, {**checkpoint_files(weights), "the calibration data": calibration_data}, "the output")
    check_writable(out_path, "the output")
    ckpt = load_checkpoint(weights)
    start = time.perf_counter()
    model = ckpt.build_model()
    source = DataSource.from_checkpoint(ckpt.meta)
    images, note = validation_images(source, parity_images)
    if note:
        log.info("%s", note)
    calib = (calibration_set(source, calibration_data, calibration_images)
             if spec.precision == "int8" else None)  # before the export: a bad folder fails in a second, not a minute
    if spec.precision == "int8" and spec.max_accuracy_drop is not None and (images is None or images.labels is None):
        raise ExportError(f"int8 --max-accuracy-drop needs labelled validation images to measure the drop on, and "
                          f"there are none ({note or 'no validation split'})")

    step(f"exporting {ckpt.path} (opset {spec.opset}, LRN {spec.lrn})")
    t = time.perf_counter()
    proto = _torch_export(model, spec)
    try:
        lrn_forms.lower_lrn(proto, spec.lrn)
    except ValueError as e:
        raise ExportError(f"cannot lower LRN to the {spec.lrn} form: {e}") from None
    timings["export"] = time.perf_counter() - t
    proto, quantization = _apply_precision(proto, spec, (model, calib, images, calibration_methods), step, timings)
    _finish_graph(proto, spec, ckpt, quantization)

    with atomic_path(out_path) as tmp:
        onnx.save(proto, os.fspath(tmp))
        step("validating the graph")
        t = time.perf_counter()
        validate_onnx(tmp, input_name=spec.input_name, output_name=spec.output_name,
                      num_classes=int(ckpt.meta["num_classes"]), batch=spec.batch,
                      ir_version=ir_version_for(spec.opset), opset=spec.opset)
        reports, accuracy = _check_parity(model, tmp, spec, images, step)
        timings["validate"] = time.perf_counter() - t
        _raise_on_miss(reports, accuracy, spec, tmp, out_path, keep_failed)
        sha256, size = sha256_file(tmp), tmp.stat().st_size
    timings["total"] = time.perf_counter() - start
    result = ExportResult(out_path, sha256, spec.precision, spec.lrn, spec.opset, ir_version_for(spec.opset),
                          spec.batch, size, ckpt.path, tuple(reports), accuracy, timings, count_ops(proto),
                          quantization)
    log.info("%s", result)
    return result


def _apply_precision(proto: onnx.ModelProto, spec: ExportSpec, int8: tuple, step: Callable[[str], None],
                     timings: dict[str, float]) -> tuple[onnx.ModelProto, dict | None]:
    """fp16: cast everything but the LRN; int8: the accuracy-aware search (export/int8_search.py); fp32: as exported.
    ``int8`` is (the PyTorch model, the calibration set, the validation images, the calibration methods)."""
    if spec.precision == "fp16":
        return convert_to_fp16(proto, keep_fp32=lrn_forms.is_lrn_node), None
    if spec.precision != "int8":
        return proto, None
    model, calib, images, methods = int8
    labelled = images is not None and images.labels is not None
    config = SearchConfig(tuple(methods), spec.accuracy_budget(len(images)) if labelled else None,
                          spec.resolved_tolerance("images"), _random_inputs(), spec.resolved_tolerance("random"),
                          spec.batch, spec.input_name, spec.output_name)
    start = time.perf_counter()
    # onnxruntime.quantization's calibration helpers log through the root logger; nothing there is for the user.
    with _quiet("root", level=logging.ERROR):
        lrn_forms.prepare_lrn_for_int8(proto)
        proto, choice = search_int8(proto, model, calib, images, config, step)
    timings["quantize"] = time.perf_counter() - start
    return proto, choice.to_dict()


def _random_inputs() -> np.ndarray:
    return np.random.default_rng(RANDOM_SEED).standard_normal((RANDOM_SAMPLES, *INPUT_SHAPE), dtype=np.float32)


def _torch_export(model: torch.nn.Module, spec: ExportSpec) -> onnx.ModelProto:
    """torch.onnx dynamo export with LRN as one native node; in memory, weights inside the model."""
    try:
        export_model, _ = lrn_forms.with_lrn_ops(model)
    except ValueError as e:
        raise ExportError(str(e)) from None
    example = torch.zeros(spec.batch or 2, *INPUT_SHAPE)  # batch 2: a symbolic dimension must not specialise on 1
    dynamic = None if spec.batch else ({0: torch.export.Dim("batch", min=1, max=MAX_BATCH)},)
    try:
        with warnings.catch_warnings(), _quiet("onnxscript", "onnx_ir", "torch.onnx", "torch.export"):
            warnings.simplefilter("ignore")  # deprecation chatter from torch.export internals
            program = torch.onnx.export(
                export_model, (example,), None, dynamo=True, external_data=False, opset_version=spec.opset,
                input_names=[spec.input_name], output_names=[spec.output_name], dynamic_shapes=dynamic,
                custom_translation_table=lrn_forms.translation_table(), verbose=False, report=False)
    except torch.onnx.OnnxExporterError as e:
        raise ExportError(f"torch.onnx could not export the model at opset {spec.opset}: {first_line(e)}") from None
    return program.model_proto


@contextlib.contextmanager
def _quiet(*names: str, level: int = logging.WARNING) -> Iterator[None]:
    """Silence third-party chatter below ``level`` (pass-manager notes, quantization advice) for a block."""
    loggers = [logging.getLogger(name) for name in names]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(max(level, logger.getEffectiveLevel()))
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


def _finish_graph(proto: onnx.ModelProto, spec: ExportSpec, ckpt, quantization: dict | None = None) -> None:
    """IR version, names and the metadata that lets any runtime preprocess and label from the file alone."""
    import onnxruntime
    import onnxscript

    proto.ir_version = ir_version_for(spec.opset)
    proto.producer_name, proto.producer_version = "alexnet-deploy", _tool_version()
    proto.graph.name = "alexnet"
    used = {n.domain for n in proto.graph.node} | {""}  # the quantizer may import com.microsoft without using it
    kept = [o for o in proto.opset_import if o.domain in used]
    del proto.opset_import[:]
    proto.opset_import.extend(kept)
    data = ckpt.meta.get("data") or {}
    meta = OnnxMeta(
        class_names=ckpt.class_names, mean=[float(v) for v in ckpt.meta["mean"]],
        std=[float(v) for v in ckpt.meta["std"]], input_shape=list(INPUT_SHAPE), precision=spec.precision,
        checkpoint_sha256=sha256_file(ckpt.path), checkpoint_path=str(Path(ckpt.path).resolve()), lrn=spec.lrn,
        input_name=spec.input_name, output_name=spec.output_name, data_path=data.get("path"),
        val_split=data.get("val_split"), seed=data.get("seed"),
        versions={"torch": torch.__version__, "onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__,
                  "onnxscript": onnxscript.__version__, "alexnet-deploy": _tool_version()},
        quantization=quantization)
    write_metadata(proto, meta)


def _check_parity(model: torch.nn.Module, path: Path, spec: ExportSpec, images: ImageSet | None,
                  step: Callable[[str], None]) -> tuple[list[ParityReport], dict[str, float] | None]:
    sets = [("random", ImageSet(_random_inputs(), None, "random"))]
    if images is not None:
        sets.append(("images", images))
    reports, accuracy = [], None
    runtime = OrtRuntime(path, precision=spec.precision)  # the same adapter (and session options) bench runs
    try:
        runtime.load()
    except ToolkitError as e:
        raise ExportError(f"ONNX Runtime cannot load the exported graph: {first_line(e)}") from None
    with runtime:
        for kind, data in sets:
            step(f"parity on {len(data)} {'random inputs' if kind == 'random' else 'validation images'}")
            reference = torch_logits(model, data)
            candidate, _ = onnx_logits(runtime, data, spec.input_name, spec.output_name, spec.batch)
            reports.append(compare_outputs({spec.output_name: reference}, {spec.output_name: candidate},
                                           spec.resolved_tolerance(kind), reference_name="torch fp32",
                                           candidate_name=f"onnxruntime {spec.precision}", inputs=kind))
            if data.labels is not None and candidate.shape == reference.shape:
                accuracy = {"reference": float(np.mean(reference.argmax(1) == data.labels)),
                            "onnx": float(np.mean(candidate.argmax(1) == data.labels)), "images": float(len(data))}
    return reports, accuracy


def _raise_on_miss(reports: list[ParityReport], accuracy: dict[str, float] | None, spec: ExportSpec, tmp: Path,
                   out_path: Path, keep_failed: bool) -> None:
    failed = [r for r in reports if not r.passed]
    drop = (accuracy["reference"] - accuracy["onnx"]) * 100 if accuracy else 0.0
    limit = spec.accuracy_budget(int(accuracy["images"])) if accuracy else 0.0
    if not failed and drop <= limit:
        return
    problems = [f"{r.inputs}: " + "; ".join(f for o in r.outputs for f in o.failures) for r in failed]
    if drop > limit:
        problems.append(f"accuracy dropped {drop:.2f} points (fp32 {accuracy['reference']:.2%} → "
                        f"{accuracy['onnx']:.2%}), more than {limit:g}")
    if keep_failed:
        failed_path = out_path.with_name(f"{out_path.stem}.failed{out_path.suffix or '.onnx'}")
        os.replace(tmp, failed_path)
        kept = f"; kept for debugging as {failed_path}"
    else:
        kept = f"; nothing was written to {out_path}"
    raise ParityError(f"the {spec.precision} ONNX model misses its tolerance ({' | '.join(problems)}){kept}",
                      (failed or reports)[0], reports, accuracy)


def _tool_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("alexnet-deploy")
    except PackageNotFoundError:
        return "unknown"

