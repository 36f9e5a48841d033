"""Triton config.pbtxt from an ONNX graph (ONNX Runtime backend) and a TensorRT plan's manifest (TensorRT backend)."""
from __future__ import annotations

import json
import logging
import os
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import onnx

from core.onnx_file import read_metadata
from core.contract import MAX_BATCH
from core.errors import ToolkitError
from core.fileio import sha256_file

log = logging.getLogger(__name__)

# ONNX TensorProto element type → Triton DataType (model_config.proto).
TRITON_DTYPES = {1: "TYPE_FP32", 2: "TYPE_UINT8", 3: "TYPE_INT8", 4: "TYPE_UINT16", 5: "TYPE_INT16", 6: "TYPE_INT32",
                 7: "TYPE_INT64", 8: "TYPE_STRING", 9: "TYPE_BOOL", 10: "TYPE_FP16", 11: "TYPE_FP64",
                 12: "TYPE_UINT32", 13: "TYPE_UINT64", 16: "TYPE_BF16"}
INSTANCE_KINDS = {"auto": "KIND_AUTO", "cpu": "KIND_CPU", "gpu": "KIND_GPU"}
LABELS_NAME = "labels.txt"
# Long enough for concurrent requests to meet in one batch, short next to AlexNet's ~1 ms GPU batch latency.
DEFAULT_QUEUE_DELAY_US = 100
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


class TritonError(ToolkitError):
    """The model cannot be written as a Triton model (bad name, unsupported graph, existing folder, foreign plan)."""


@dataclass(frozen=True)
class TritonOptions:
    name: str | None = None              # model name; None = alexnet, alexnet_fp16, alexnet_int8 by precision
    max_batch: int | None = None         # None = export.spec.MAX_BATCH (symbolic batch only)
    instances: int = 1                   # instance_group count (per GPU for KIND_GPU)
    kind: str = "auto"                   # auto | cpu | gpu for the ONNX model (a plan always runs on the GPU)
    max_queue_delay_us: int = DEFAULT_QUEUE_DELAY_US
    overwrite: bool = False              # replace existing model folders of the same name
    openvino: bool = False               # also write <name>_openvino for Triton's OpenVINO backend (CPU serving)
    bf16: bool = False                   # the OpenVINO variant computes in bf16 (CPUs with native bf16)


@dataclass(frozen=True)
class TritonTensor:
    """One ``input`` / ``output`` entry of config.pbtxt."""
    name: str
    data_type: str                       # TYPE_FP32, ...
    dims: tuple[int, ...]                # without the batch dimension when max_batch_size > 0; -1 = variable
    format: str | None = None            # inputs: FORMAT_NCHW for a CHW image
    label_filename: str | None = None    # outputs: the class labels file


@dataclass(frozen=True)
class TritonConfig:
    """A model's config.pbtxt as data; :meth:`to_pbtxt` renders it in protobuf text format."""
    name: str
    platform: str                        # onnxruntime_onnx | tensorrt_plan | "" (the openvino backend has none)
    backend: str                         # onnxruntime | tensorrt | openvino
    max_batch_size: int                  # 0 = the model does not batch: dims are the full shapes
    inputs: tuple[TritonTensor, ...]
    outputs: tuple[TritonTensor, ...]
    preferred_batch_sizes: tuple[int, ...] = ()
    max_queue_delay_us: int = DEFAULT_QUEUE_DELAY_US
    instance_kind: str = "KIND_AUTO"
    instance_count: int = 1
    comments: tuple[str, ...] = ()
    labels: tuple[str, ...] = ()         # the labels file's lines (class names); empty = no labels file
    default_model_filename: str | None = None  # the file in the version folder, when not the backend's default
    parameters: tuple[tuple[str, str], ...] = ()  # backend parameters (the openvino backend's settings)

    def to_pbtxt(self) -> str:
        lines = [f"# {c}" for c in self.comments]
        lines += [f"name: {_quote(self.name)}"] + ([f"platform: {_quote(self.platform)}"] if self.platform else [])
        lines += [f"backend: {_quote(self.backend)}", f"max_batch_size: {self.max_batch_size}"]
        if self.default_model_filename:
            lines.append(f"default_model_filename: {_quote(self.default_model_filename)}")
        lines += _tensors("input", self.inputs) + _tensors("output", self.outputs)
        if self.max_batch_size > 0:  # Triton batches only models that declare a batch dimension
            lines += ["dynamic_batching {", f"  preferred_batch_size: [ {_ints(self.preferred_batch_sizes)} ]",
                      f"  max_queue_delay_microseconds: {self.max_queue_delay_us}", "}"]
        lines += ["instance_group [", "  {", f"    count: {self.instance_count}", f"    kind: {self.instance_kind}",
                  "  }", "]"]
        for key, value in self.parameters:
            lines += ["parameters {", f"  key: {_quote(key)}", f"  value {{ string_value: {_quote(value)} }}", "}"]
        return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class PlanFile:
    """A serialized TensorRT engine and, when known, its engine-cache manifest (TensorRT version, GPU, profile)."""
    path: Path
    manifest: dict[str, Any] | None = None

    @classmethod
    def from_path(cls, path: str | os.PathLike) -> "PlanFile":
        """The plan at ``path`` with the manifest beside it (``<stem>.json``, as the engine cache stores them)."""
        path = Path(path)
        if not path.is_file():
            raise TritonError(f"TensorRT plan not found: {path}")
        sidecar = path.with_suffix(".json")
        try:
            manifest = json.loads(sidecar.read_text()) if sidecar.is_file() else None
        except (OSError, ValueError) as e:
            raise TritonError(f"unreadable engine manifest {sidecar}: {e}") from None
        return cls(path, manifest if isinstance(manifest, dict) and "onnx_sha256" in manifest else None)


def model_name(name: str | None, precision: str | None) -> str:
    """``name``, or alexnet / alexnet_fp16 / alexnet_int8 by ``precision``; checked to be a usable folder name."""
    name = name or ("alexnet" if precision in (None, "", "fp32") else f"alexnet_{precision}")
    if not _NAME_RE.match(name):
        raise TritonError(f"model name {name!r}: use letters, digits, '_', '-' and '.', starting with a letter or "
                          "digit")
    return name


def onnx_config(onnx_path: str | os.PathLike, options: TritonOptions = TritonOptions()) -> TritonConfig:
    """config.pbtxt for the ONNX Runtime backend, with names, dtypes and dims read from the graph.

    A graph whose inputs and outputs all start with a symbolic dimension batches: dims drop it and max_batch_size is
    ``options.max_batch`` (default ``MAX_BATCH``). Otherwise max_batch_size is 0 and dims are the full shapes. An
    output with one score per class (from the alexnet_deploy metadata) gets ``label_filename``.

    Raises:
        TritonError: unreadable file, external weights, a dtype Triton lacks, --max-batch on a static batch, an
            unknown instance kind, or class names that cannot be lines of a labels file.
    """
    onnx_path = Path(onnx_path)
    if options.kind not in INSTANCE_KINDS:
        raise TritonError(f"instance kind {options.kind!r}; expected one of {', '.join(INSTANCE_KINDS)}")
    model = _load(onnx_path)
    meta = read_metadata(model)
    initializers = {i.name for i in model.graph.initializer}
    inputs = [v for v in model.graph.input if v.name not in initializers]  # old exporters list weights as inputs
    shapes = {v.name: _shape(v) for v in [*inputs, *model.graph.output]}
    batched = all(s and s[0] is None for s in shapes.values())
    if not batched and options.max_batch is not None:
        raise TritonError(f"{onnx_path} has no symbolic batch dimension ({_describe(shapes)}): Triton serves it with "
                          "max_batch_size 0, so --max-batch does not apply (export without --batch to batch)")
    max_batch = (options.max_batch or MAX_BATCH) if batched else 0
    classes = _class_names(meta)
    outputs = tuple(_output(v, shapes[v.name], batched, classes) for v in model.graph.output)
    comment = (f"Written by alexnet-deploy from {onnx_path.name} (sha256 {sha256_file(onnx_path)}"
               f"{', ' + meta.precision if meta else ''}).")
    return TritonConfig(
        model_name(options.name, meta.precision if meta else None), "onnxruntime_onnx", "onnxruntime", max_batch,
        tuple(_input(v, shapes[v.name], batched) for v in inputs), outputs, preferred_batch_sizes(max_batch),
        options.max_queue_delay_us, INSTANCE_KINDS[options.kind], options.instances, (comment,),
        classes if any(o.label_filename for o in outputs) else ())


def plan_config(base: TritonConfig, plan: PlanFile, options: TritonOptions = TritonOptions()) -> TritonConfig:
    """config.pbtxt for the TensorRT backend: the ONNX model's I/O, batch limits from the engine's profile, on GPU.

    Raises:
        TritonError: a profile that does not start at batch 1, or --max-batch above the profile's max.
    """
    manifest = plan.manifest or {}
    profile = manifest.get("profile") or {}
    max_batch = base.max_batch_size
    if max_batch and profile:
        if profile.get("min") != 1:
            raise TritonError(f"{plan.path}: its profile starts at batch {profile.get('min')}; Triton's dynamic "
                              "batcher sends batches from 1 up, so build the engine with min batch 1")
        if options.max_batch is not None and options.max_batch > profile["max"]:
            raise TritonError(f"--max-batch {options.max_batch} exceeds the engine's profile max {profile['max']}")
        max_batch = min(max_batch, int(profile["max"]))
    elif max_batch:
        log.warning("no engine manifest next to %s: assuming its profile covers batch 1..%d", plan.path, max_batch)
    built = (f"TensorRT {manifest.get('tensorrt_version', '?')} on {manifest.get('gpu_name', '?')} (compute "
             f"capability {manifest.get('compute_capability', '?')})" if manifest else "an unrecorded TensorRT and GPU")
    comments = base.comments + (
        f"TensorRT plan {plan.path.name}, built with {built}.",
        "A plan only loads on the TensorRT version and GPU model it was built for; rebuild it for any other.")
    return replace(base, name=f"{base.name}_trt", platform="tensorrt_plan", backend="tensorrt",
                   max_batch_size=max_batch, preferred_batch_sizes=preferred_batch_sizes(max_batch, profile.get("opt")),
                   instance_kind="KIND_GPU", comments=comments)


def openvino_config(base: TritonConfig, options: TritonOptions = TritonOptions()) -> TritonConfig:
    """config.pbtxt for Triton's OpenVINO backend on the same ONNX file: CPU instances set up as the toolkit's
    openvino runtime measures them (latency hint, one stream per instance), bf16 when asked.

    The backend has no parameter that pins f32: without HINT_BF16 OpenVINO uses its default inference precision,
    which is bf16 on CPUs with native bf16 (AVX512-BF16, AMX) and f32 elsewhere. The comment in the file says so,
    and the report's openvino bf16 rows describe what such a CPU serves.
    """
    parameters = [("PERFORMANCE_HINT", "LATENCY"), ("NUM_STREAMS", "1")]
    parameters += [("HINT_BF16", "YES")] if options.bf16 else []
    precision = ("bf16 (HINT_BF16)" if options.bf16 else
                 "OpenVINO's default precision: bf16 on CPUs with native bf16, else the file's own")
    comments = base.comments + (f"OpenVINO backend on the ONNX file: {precision}; latency hint, one stream per "
                                "instance.",)
    return replace(base, name=f"{base.name}_openvino", platform="", backend="openvino", instance_kind="KIND_CPU",
                   default_model_filename="model.onnx", parameters=tuple(parameters), comments=comments)


def preferred_batch_sizes(max_batch: int, opt: int | None = None) -> tuple[int, ...]:
    """max_batch, its half and its quarter (and an engine's tuned ``opt``): batch sizes the batcher runs at once."""
    if max_batch <= 0:
        return ()
    sizes = {max_batch, max(1, max_batch // 2), max(1, max_batch // 4)}
    if opt and 1 <= int(opt) <= max_batch:
        sizes.add(int(opt))
    return tuple(sorted(sizes))


def _load(path: Path) -> onnx.ModelProto:
    from google.protobuf.message import DecodeError

    if not path.is_file():
        raise TritonError(f"ONNX file not found: {path}")
    try:
        model = onnx.load(os.fspath(path), load_external_data=False)
    except (OSError, DecodeError, ValueError) as e:
        raise TritonError(f"{path} is not a readable ONNX model: {e}") from None
    if any(e.key == "location" for i in model.graph.initializer for e in i.external_data):
        raise TritonError(f"{path} keeps its weights in external data files; export a self-contained file (the "
                          "exporter's default) to place it in a Triton repository")
    return model


def _class_names(meta) -> tuple[str, ...]:
    if meta is None:
        return ()
    bad = [n for n in meta.class_names if not n or "\n" in n or "\r" in n]
    if bad:
        raise TritonError(f"class name(s) {bad!r} cannot be lines of {LABELS_NAME}")
    return tuple(meta.class_names)


def _shape(value) -> tuple[int | None, ...]:
    return tuple(int(d.dim_value) if d.HasField("dim_value") and d.dim_value > 0 else None
                 for d in value.type.tensor_type.shape.dim)


def _input(value, shape: tuple[int | None, ...], batched: bool) -> TritonTensor:
    data_type, dims = _type_and_dims(value, shape, batched)
    image = len(dims) == 3 and dims[0] == 3  # CHW per request: lets Triton's image clients preprocess for it
    return TritonTensor(value.name, data_type, dims, format="FORMAT_NCHW" if image else None)


def _output(value, shape: tuple[int | None, ...], batched: bool, classes: tuple[str, ...]) -> TritonTensor:
    data_type, dims = _type_and_dims(value, shape, batched)
    scores = bool(classes) and len(dims) >= 1 and dims[-1] == len(classes)  # one score per class: label it
    return TritonTensor(value.name, data_type, dims, label_filename=LABELS_NAME if scores else None)


def _type_and_dims(value, shape: tuple[int | None, ...], batched: bool) -> tuple[str, tuple[int, ...]]:
    elem = value.type.tensor_type.elem_type
    if elem not in TRITON_DTYPES:
        raise TritonError(f"tensor {value.name!r} has ONNX element type {elem}, which Triton has no type for")
    return TRITON_DTYPES[elem], tuple(-1 if d is None else d for d in (shape[1:] if batched else shape))


def _describe(shapes: dict[str, tuple[int | None, ...]]) -> str:
    return ", ".join(f"{n} ({', '.join('N' if d is None else str(d) for d in s)})" for n, s in shapes.items())


def _tensors(kind: str, tensors: tuple[TritonTensor, ...]) -> list[str]:
    lines = [f"{kind} ["]
    for i, t in enumerate(tensors):
        lines += ["  {", f"    name: {_quote(t.name)}", f"    data_type: {t.data_type}"]
        lines += [f"    format: {t.format}"] if t.format else []
        lines += [f"    dims: [ {_ints(t.dims)} ]"]
        lines += [f"    label_filename: {_quote(t.label_filename)}"] if t.label_filename else []
        lines.append("  }," if i < len(tensors) - 1 else "  }")
    return lines + ["]"]


def _ints(values) -> str:
    return ", ".join(str(int(v)) for v in values)


def _quote(text: str) -> str:
    """A protobuf text-format string literal (UTF-8 kept as is)."""
    escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\r", "\\r")
    return f'"{escaped}"'
