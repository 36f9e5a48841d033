"""Predict: image files → the validation preprocessing → a runtime → softmax → top-k classes, file by file."""
from __future__ import annotations

import logging
import os
import struct
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from core.contract import INPUT_NAME, INPUT_SHAPE, OUTPUT_NAME, TensorSpec
from core.errors import ToolkitError
from core.onnx_file import OnnxInfo, read_onnx_info
from deploy.models import TorchModel, make_runtime, reference_model
from runtimes.base import Runtime
from runtimes.errors import RuntimeUnavailableError
from runtimes.options import RuntimeOptions
from runtimes.registry import availability, runs_onnx, runtime_class

log = logging.getLogger(__name__)

DEFAULT_BATCH_SIZE = 32
DEFAULT_TOP_K = 5
# What PIL raises for bad bytes: truncated data (OSError), broken chunks (SyntaxError, EOFError, struct.error in some
# plugins) and odd headers (ValueError). Anything else is a bug and should surface as one.
_DECODE_ERRORS = (OSError, ValueError, SyntaxError, EOFError, struct.error)


class PredictError(ToolkitError):
    """The model or the options cannot be used to predict (no metadata, wrong runtime for the file, bad --top-k)."""


@dataclass(frozen=True)
class PredictModel:
    """What predict needs to know about a model: labels, preprocessing and I/O, from the ONNX metadata or checkpoint."""
    path: Path
    kind: str                       # "onnx" or "checkpoint"
    class_names: tuple[str, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    info: OnnxInfo                  # the I/O contract (for a checkpoint: the one export would write)
    torch_model: TorchModel | None = None  # what the torch runtime runs; None = no checkpoint found

    @property
    def static_batch(self) -> int | None:
        return self.info.static_batch


@dataclass(frozen=True)
class ClassScore:
    class_name: str
    index: int
    probability: float

    def to_dict(self) -> dict[str, Any]:
        return {"class": self.class_name, "index": self.index, "probability": self.probability}


@dataclass(frozen=True)
class ImageResult:
    """The top-k classes of one input, or why it could not be predicted (``error``)."""
    path: str
    predictions: tuple[ClassScore, ...] = ()
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    def to_dict(self) -> dict[str, Any]:
        if self.error is not None:
            return {"path": self.path, "error": self.error}
        return {"path": self.path, "predictions": [p.to_dict() for p in self.predictions]}

    def __str__(self) -> str:
        if self.error is not None:
            return f"{self.path}: {self.error}"
        best = self.predictions[0]
        return f"{self.path}: {best.class_name} ({best.probability:.2%})"


def open_model(path: str | os.PathLike) -> PredictModel:
    """Read labels, mean/std and I/O from an exported ONNX file or from a checkpoint (run folder or .safetensors).

    Raises:
        PredictError: an ONNX file without alexnet-deploy metadata, or whose graph does not match it (input shape,
            one score per class name).
        OnnxFileError, CheckpointError: the file is not a readable ONNX model or checkpoint.
    """
    path = Path(path)
    if path.is_dir() or path.suffix == ".safetensors":
        return _checkpoint_model(path)
    return _onnx_model(path)


def _onnx_model(path: Path) -> PredictModel:
    info = read_onnx_info(path)
    meta = info.meta
    if meta is None:
        raise PredictError(f"{path} carries no alexnet-deploy metadata (class names, mean and std, needed to "
                           "preprocess and label images); predict takes an ONNX file written by `cli.py export` or a "
                           "run folder")
    if len(info.inputs) != 1 or tuple(info.inputs[0].shape[1:]) != INPUT_SHAPE:
        found = ", ".join(f"{s.name} {s.shape_str()}" for s in info.inputs)
        raise PredictError(f"{path}: predict feeds one input of shape (N, {', '.join(map(str, INPUT_SHAPE))}) (the "
                           f"validation crop), but the model has {found}")
    scores = info.outputs[0].shape[-1] if info.outputs[0].shape else None
    if len(info.outputs[0].shape) != 2 or scores != len(meta.class_names):
        raise PredictError(f"{path}: its output {info.outputs[0].name!r} {info.outputs[0].shape_str()} does not give "
                           f"one score per class: the metadata names {len(meta.class_names)} classes")
    torch_model = None
    if meta.checkpoint_path and Path(meta.checkpoint_path).is_file():
        torch_model = TorchModel(Path(meta.checkpoint_path), "the ONNX metadata")  # its sha256 is checked on use
    return PredictModel(path, "onnx", tuple(meta.class_names), tuple(meta.mean), tuple(meta.std), info, torch_model)


def _checkpoint_model(path: Path) -> PredictModel:
    from trainer.checkpoint import load_checkpoint

    ckpt = load_checkpoint(path)
    n = len(ckpt.class_names)
    info = OnnxInfo(ckpt.path, (TensorSpec(INPUT_NAME, (None, *INPUT_SHAPE), "float32"),),
                    (TensorSpec(OUTPUT_NAME, (None, n), "float32"),), "fp32")
    return PredictModel(ckpt.path, "checkpoint", tuple(ckpt.class_names), tuple(ckpt.meta["mean"]),
                        tuple(ckpt.meta["std"]), info, TorchModel(ckpt.path, str(path), factory=ckpt.build_model))


def make_predict_runtime(model: PredictModel, name: str | None = None, options: RuntimeOptions = RuntimeOptions(),
                         batch_size: int = DEFAULT_BATCH_SIZE, allow_checkpoint_mismatch: bool = False) -> Runtime:
    """The runtime ``name`` (default: onnxruntime for an ONNX file, torch for a checkpoint) for ``model``, unloaded.

    Raises:
        RuntimeOptionError: an unknown name.
        PredictError: an ONNX runtime asked to run a checkpoint, or torch without a checkpoint.
        CheckpointMismatchError: torch on an ONNX file whose checkpoint changed since the export (unless allowed).
        RuntimeUnavailableError: the runtime cannot run on this machine (the message says why).
    """
    name = name or ("onnxruntime" if model.kind == "onnx" else "torch")
    runtime_class(name)  # an unknown name fails here, with the list of runtimes
    if model.kind == "checkpoint" and runs_onnx(name):
        raise PredictError(f"--runtime {name} runs ONNX files and {model.path} is a checkpoint: export it first "
                           f"(python cli.py export {model.path}) and predict with the .onnx file, or use --runtime "
                           "torch")
    if not runs_onnx(name) and model.torch_model is None:
        raise PredictError(f"the {name} runtime needs the PyTorch checkpoint, and the one named in {model.path}'s "
                           "metadata is not there; pass the run folder instead of the ONNX file")
    ok, reason = availability(name, options.precision)
    if not ok:
        raise RuntimeUnavailableError(f"{name}: {reason}")
    torch_model = model.torch_model
    if not runs_onnx(name) and model.kind == "onnx":  # the weights must be the ones the file was exported from
        torch_model, _ = reference_model(model.info.meta, None, allow_checkpoint_mismatch)
    return make_runtime(name, model.path, model.info, torch_model, options, [model.static_batch or batch_size])


def expand_inputs(paths: Sequence[str | os.PathLike], recursive: bool = False) -> list[tuple[str, str | None]]:
    """Each argument → ``(path, None)`` to predict, or ``(path, why not)``; folders expand only when ``recursive``.

    A folder expands to the image files under it (by extension, sorted, hidden files skipped); a file named
    explicitly is always tried, whatever its extension.
    """
    from trainer.data import IMAGE_EXTENSIONS, image_files

    expanded: list[tuple[str, str | None]] = []
    for arg in paths:
        path = Path(arg)
        if path.is_dir():
            if not recursive:
                expanded.append((str(path), f"is a directory; pass its images ({path / '*.jpg'}) or add --recursive"))
                continue
            expanded += [(f, None) for f in image_files(path)] or [
                (str(path), f"is a directory without image files ({' '.join(IMAGE_EXTENSIONS)})")]
        elif not path.exists():
            expanded.append((str(path), "no such file" + (" (a broken link)" if path.is_symlink() else "")))
        elif not path.is_file():  # a named pipe or a device would block the read, or never end
            expanded.append((str(path), "not a regular file (a pipe, socket or device); pass image files"))
        else:
            expanded.append((str(path), None))
    return expanded


def predict_images(runtime: Runtime, model: PredictModel, inputs: Sequence[tuple[str, str | None]],
                   top_k: int | None = None, batch_size: int = DEFAULT_BATCH_SIZE) -> Iterator[ImageResult]:
    """Predict every input (from :func:`expand_inputs`) on a loaded runtime; one result per input, in input order.

    Images are preprocessed exactly as validation was (``trainer.data.eval_transform`` with the model's mean/std) and
    run ``batch_size`` at a time (a static-batch graph's own batch, padded). A file that cannot be read or decoded
    becomes a result with ``error`` set; the others are still predicted.

    Args:
        top_k: Classes per image; None = ``DEFAULT_TOP_K`` or the class count when smaller.

    Raises:
        PredictError: ``top_k`` outside 1..number of classes (raised at once, before any image is read).
    """
    n = len(model.class_names)
    top_k = min(DEFAULT_TOP_K, n) if top_k is None else top_k
    if not 1 <= top_k <= n:
        raise PredictError(f"--top-k {top_k} is outside 1..{n}: the model has {n} classes")
    return _predict(runtime, model, inputs, top_k, model.static_batch or batch_size)


def _predict(runtime: Runtime, model: PredictModel, inputs: Sequence[tuple[str, str | None]], top_k: int,
             batch: int) -> Iterator[ImageResult]:
    from trainer.data import eval_transform

    transform = eval_transform(model.mean, model.std)
    pending: list[tuple[str, np.ndarray | None, str | None]] = []
    ready = 0
    for path, error in inputs:
        array, error = (None, error) if error else _load_image(path, transform)
        pending.append((path, array, error))
        ready += error is None
        if ready == batch:
            yield from _flush(runtime, model, pending, top_k)
            pending, ready = [], 0
    yield from _flush(runtime, model, pending, top_k)


def _load_image(path: str, transform) -> tuple[np.ndarray | None, str | None]:
    from PIL import Image, UnidentifiedImageError

    from trainer.data import IMAGE_EXTENSIONS, load_rgb

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # EXIF and palette chatter; a real problem raises below
            image = load_rgb(path)
    except UnidentifiedImageError:
        return None, f"not an image file (unrecognised format; accepted: {' '.join(IMAGE_EXTENSIONS)})"
    except Image.DecompressionBombError as e:
        return None, f"refused to decode: {e}"
    except PermissionError as e:
        return None, f"cannot read: {e.strerror}"
    except FileNotFoundError:
        return None, "no such file"
    except _DECODE_ERRORS as e:
        return None, f"corrupt or truncated image ({str(e) or type(e).__name__})"
    return transform(image).numpy(), None


def _flush(runtime: Runtime, model: PredictModel, pending: list[tuple[str, np.ndarray | None, str | None]],
           top_k: int) -> Iterator[ImageResult]:
    arrays = [a for _, a, error in pending if error is None]
    probabilities = iter(_probabilities(runtime, model, arrays) if arrays else ())
    for path, _, error in pending:
        yield ImageResult(path, error=error) if error else _top(path, next(probabilities), model.class_names, top_k)


def _probabilities(runtime: Runtime, model: PredictModel, arrays: list[np.ndarray]) -> np.ndarray:
    spec = runtime.input_specs()[0]
    x = np.stack(arrays).astype(spec.dtype, copy=False)
    n, static = len(x), model.static_batch
    if static and n < static:  # a static graph takes exactly its batch: pad with zeros, drop their outputs
        x = np.concatenate([x, np.zeros((static - n, *x.shape[1:]), x.dtype)])
    logits = runtime.infer({spec.name: x})[model.info.outputs[0].name][:n]
    return softmax(logits)


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax in float64 (fp16 logits would lose the small probabilities)."""
    z = np.asarray(logits, dtype=np.float64)
    z = np.exp(z - z.max(axis=1, keepdims=True))
    return z / z.sum(axis=1, keepdims=True)


def _top(path: str, probabilities: np.ndarray, class_names: Sequence[str], k: int) -> ImageResult:
    if not np.all(np.isfinite(probabilities)):
        return ImageResult(path, error="the model returned non-finite logits (NaN or Inf) for this image")
    order = np.argsort(-probabilities, kind="stable")[:k]  # stable: ties keep the class order
    return ImageResult(path, tuple(ClassScore(class_names[i], int(i), float(probabilities[i])) for i in order))


def table_header(path_width: int, class_width: int) -> str:
    """The column header of :func:`table_rows`."""
    return f"{'image':<{path_width}}  {'rank':>4}  {'class':<{class_width}}  {'probability':>11}"


def table_rows(result: ImageResult, path_width: int, class_width: int) -> list[str]:
    """A predicted image as table rows: the path on the first row, then one row per rank."""
    return [f"{result.path if rank == 1 else '':<{path_width}}  {rank:>4}  {p.class_name:<{class_width}}  "
            f"{_percent(p.probability):>11}" for rank, p in enumerate(result.predictions, start=1)]


def _percent(probability: float) -> str:
    """Two decimals, without rounding a near-certainty up to 100 % or a small chance down to 0 %."""
    if 0 < probability < 5e-5:
        return "<0.01%"
    if 0.99995 <= probability < 1:
        return ">99.99%"
    return f"{probability:.2%}"
