"""What each runtime runs: the ONNX file, or (torch) the PyTorch model rebuilt from the checkpoint the file was
exported from, with the checkpoint's sha256 checked against the ONNX metadata."""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from core.errors import ToolkitError
from core.fileio import sha256_file
from core.onnx_file import OnnxInfo, OnnxMeta
from runtimes.base import Runtime
from runtimes.options import RuntimeOptions
from runtimes.registry import create_runtime, runs_onnx


class CheckpointMismatchError(ToolkitError):
    """The checkpoint's weights are not the ones the ONNX file was exported from."""


@dataclass(frozen=True)
class TorchModel:
    """What the torch runtime (or the parity reference) runs: a checkpoint, built into a model on first use, or a
    model given in code (an nn.Module or a callable returning one, as Polygraphy's runners take)."""
    path: Path | None                # the .safetensors file; None for a model given in code
    origin: str                      # how it was found, for the report ("--reference RUN", "the ONNX metadata")
    factory: Callable[[], Any] | None = None

    def build(self):
        if self.factory is not None:
            return self.factory()
        from trainer.checkpoint import load_checkpoint

        return load_checkpoint(self.path).build_model()


def checkpoint_model(path: str | os.PathLike, origin: str = "") -> TorchModel:
    """The checkpoint in a run folder or a ``.safetensors`` file (its existence checked now, its weights read later).

    Raises:
        CheckpointError: no checkpoint there.
    """
    from trainer.checkpoint import resolve_checkpoint

    return TorchModel(resolve_checkpoint(path), origin or str(path))


def reference_model(meta: OnnxMeta | None, reference: Any = None,
                    allow_mismatch: bool = False) -> tuple[TorchModel | None, str]:
    """The PyTorch model for an ONNX file: ``reference`` if given (a checkpoint path, an nn.Module or a callable
    returning one), else the checkpoint its metadata names.

    Returns:
        The model (None when there is none: then ONNX Runtime CPU is the parity reference) and a sentence saying
        where it came from or why there is none.

    Raises:
        CheckpointError: ``reference`` is not a checkpoint.
        CheckpointMismatchError: its sha256 differs from the one the ONNX metadata records (unless
            ``allow_mismatch``): parity and accuracy would compare different weights.
    """
    if reference is not None and not isinstance(reference, (str, os.PathLike)):
        factory = reference if callable(reference) and not hasattr(reference, "state_dict") else (lambda: reference)
        return TorchModel(None, "given model", factory), "given model"
    if reference is not None:
        model = checkpoint_model(reference, f"--reference {reference}")
    elif meta is not None and meta.checkpoint_path and Path(meta.checkpoint_path).is_file():
        model = checkpoint_model(meta.checkpoint_path, f"checkpoint from the ONNX metadata: {meta.checkpoint_path}")
    else:
        why = ("the ONNX file carries no alexnet-deploy metadata" if meta is None else
               f"the checkpoint named in its metadata ({meta.checkpoint_path or 'none'}) is not there")
        return None, why
    if meta is not None and meta.checkpoint_sha256 and not allow_mismatch:
        found = sha256_file(model.path)
        if found != meta.checkpoint_sha256:
            raise CheckpointMismatchError(
                f"{model.path} is not the checkpoint the ONNX file was exported from (sha256 {found[:12]}…, the file "
                f"records {meta.checkpoint_sha256[:12]}…): its results would not describe this model. Pass the "
                "original checkpoint, or --allow-checkpoint-mismatch to compare anyway")
    return model, model.origin


def make_runtime(name: str, onnx_path: str | os.PathLike, info: OnnxInfo, torch_model: TorchModel | None,
                 options: RuntimeOptions, batch_sizes: Sequence[int] = ()) -> Runtime:
    """Runtime ``name`` on what it runs: the ONNX file, or the torch model with the file's I/O names."""
    if runs_onnx(name):
        return create_runtime(name, onnx_path, options, batch_sizes)
    if torch_model is None:
        raise ToolkitError(f"the {name} runtime needs the PyTorch checkpoint: pass --reference RUN (the ONNX "
                           "metadata names no checkpoint that exists)")
    rt = create_runtime(name, torch_model.build, options, batch_sizes, io=(info.inputs[0], info.outputs[0]))
    rt.source = str(torch_model.path or torch_model.origin)
    return rt


def reference_runtime(torch_model: TorchModel | None, info: OnnxInfo, options: RuntimeOptions) -> Runtime:
    """The parity reference: eager PyTorch fp32 with TF32 off, or ONNX Runtime CPU when there is no checkpoint."""
    plain = dataclasses.replace(options, compile=False, allow_tf32=False, precision=None)
    if torch_model is not None:
        return make_runtime("torch", info.path, info, torch_model, plain)
    return create_runtime("onnxruntime", info.path, plain)


