"""Checkpoints that load without executing code: safetensors weights + JSON metadata, written atomically.

A run folder holds ``model.safetensors`` (the final weights, with the metadata JSON embedded in the safetensors header
so the file describes itself), ``model.json`` (the same metadata, for humans and tools), ``history.csv`` and
``resume/`` (per-epoch state for ``--resume``). Nothing here is ever unpickled: weights come from safetensors and the
optimizer state from ``torch.load(weights_only=True)``.
"""
from __future__ import annotations

import copy
import json
import os
import pickle
import platform
import shutil
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from core.contract import INPUT_SHAPE, is_finite_number, preprocessing_problem
from core.errors import first_line
from core.fileio import atomic_path, write_json_atomic, write_text_atomic
from trainer.errors import CheckpointError
from trainer.model import ARCHITECTURE, AlexNet, build_model

FORMAT = "alexnet-deploy/checkpoint"
FORMAT_VERSION = 1
WEIGHTS_NAME = "model.safetensors"
META_NAME = "model.json"
_HEADER_KEY = "alexnet_deploy"  # safetensors metadata key holding the JSON metadata


@dataclass(frozen=True)
class Checkpoint:
    """A loaded checkpoint: the weights, their metadata and where they came from."""
    state_dict: dict[str, torch.Tensor]
    meta: dict[str, Any]
    path: Path  # the .safetensors file

    @property
    def class_names(self) -> list[str]:
        return list(self.meta["class_names"])

    def build_model(self) -> AlexNet:
        """Rebuild the model from the metadata alone and load the weights (strictly)."""
        model = build_model(int(self.meta["num_classes"]), float(self.meta.get("dropout", 0.5)))
        try:
            model.load_state_dict(self.state_dict, strict=True)
        except RuntimeError as e:
            raise CheckpointError(f"{self.path}: the weights do not match the metadata "
                                  f"({self.meta['num_classes']} classes): {first_line(e)}") from None
        return model.eval()


def library_versions() -> dict[str, str]:
    import torchvision

    return {"python": platform.python_version(), "torch": torch.__version__, "torchvision": torchvision.__version__}


def model_metadata(num_classes: int, class_names: list[str], mean, std, dropout: float, **extra: Any) -> dict[str, Any]:
    """The metadata every checkpoint carries; ``extra`` adds training results (best epoch, metrics, config…)."""
    if len(class_names) != num_classes:
        raise ValueError(f"{len(class_names)} class names for {num_classes} classes")
    return {"format": FORMAT, "format_version": FORMAT_VERSION, "architecture": ARCHITECTURE,
            "num_classes": num_classes, "class_names": list(class_names), "input_shape": list(INPUT_SHAPE),
            "mean": [float(v) for v in mean], "std": [float(v) for v in std], "dropout": dropout,
            "versions": library_versions(), **extra}


def save_weights(path: str | os.PathLike, state_dict: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    """Write ``state_dict`` as safetensors with ``meta`` in its header, atomically."""
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in state_dict.items()}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={_HEADER_KEY: json.dumps(meta)})


def save_checkpoint(run_dir: str | os.PathLike, state_dict: dict[str, torch.Tensor], meta: dict[str, Any]) -> Path:
    """Write ``run_dir/model.safetensors`` and ``run_dir/model.json``; returns the weights path."""
    run_dir = Path(run_dir)
    weights = run_dir / WEIGHTS_NAME
    save_weights(weights, state_dict, meta)
    write_json_atomic(run_dir / META_NAME, meta)
    return weights


def resolve_checkpoint(path: str | os.PathLike) -> Path:
    """A run folder → its ``model.safetensors``; a ``.safetensors`` file → itself."""
    path = Path(path)
    if path.is_dir():
        path = path / WEIGHTS_NAME
        if not path.is_file():
            raise CheckpointError(f"no {WEIGHTS_NAME} in the run folder {path.parent} (has training finished an "
                                  "epoch?)")
    elif not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    return path


def checkpoint_files(path: str | os.PathLike | None) -> dict[str, Path]:
    """The files a checkpoint argument (run folder or ``.safetensors``) stands for, named as
    :func:`core.fileio.check_not_an_input` takes them: a report written into a run folder must not replace its
    weights. Empty when there is no checkpoint there (loading it says so)."""
    try:
        weights = resolve_checkpoint(path) if path is not None else None
    except CheckpointError:
        return {}
    return {} if weights is None else {"the checkpoint": weights,
                                       "the checkpoint's metadata": weights.with_suffix(".json")}


def load_checkpoint(path: str | os.PathLike) -> Checkpoint:
    """Load a checkpoint from a run folder or a ``.safetensors`` file, validating its metadata.

    Raises:
        CheckpointError: missing, corrupt, not ours, or metadata that does not describe the weights.
    """
    weights = resolve_checkpoint(path)
    try:
        state_dict = load_file(str(weights))
        with safe_open(str(weights), framework="pt") as f:
            header = f.metadata() or {}
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{weights} is not a readable safetensors file: {first_line(e)}") from None
    meta = _read_meta(weights, header)
    _check_meta(weights, meta)
    ckpt = Checkpoint(state_dict, meta, weights)
    fc8 = state_dict.get("classifier.fc8.weight")
    if fc8 is None or fc8.shape[0] != meta["num_classes"]:
        found = "no classifier.fc8.weight" if fc8 is None else f"fc8 has {fc8.shape[0]} outputs"
        raise CheckpointError(f"{weights}: the weights do not match the metadata "
                              f"({meta['num_classes']} classes, {found})")
    return ckpt


def _check_meta(weights: Path, meta: dict[str, Any]) -> None:
    """Every field the model is rebuilt and preprocessed from, checked before it is used (a 2-value mean or a text
    dropout would otherwise fail later, in export or predict, with a traceback)."""
    for key in ("num_classes", "class_names", "mean", "std"):
        if key not in meta:
            raise CheckpointError(f"{weights}: metadata lacks {key!r}")
    if meta.get("architecture") != ARCHITECTURE:
        raise CheckpointError(f"{weights}: architecture {meta.get('architecture')!r} is not {ARCHITECTURE!r}")
    n, names = meta["num_classes"], meta["class_names"]
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise CheckpointError(f"{weights}: num_classes must be a positive integer, got {n!r}")
    problem = preprocessing_problem(names, meta["mean"], meta["std"])
    if problem:
        raise CheckpointError(f"{weights}: {problem}")
    if len(names) != n:
        raise CheckpointError(f"{weights}: {len(names)} class names for {n} classes")
    dropout = meta.get("dropout", 0.5)
    if not is_finite_number(dropout) or not 0 <= dropout < 1:
        raise CheckpointError(f"{weights}: dropout must be a number in [0, 1), got {dropout!r}")


def _read_meta(weights: Path, header: dict[str, str]) -> dict[str, Any]:
    text = header.get(_HEADER_KEY)
    source = "safetensors header"
    if text is None:  # a bare safetensors file: fall back to the JSON next to it
        sidecar = weights.with_name(META_NAME) if weights.name == WEIGHTS_NAME else weights.with_suffix(".json")
        if not sidecar.is_file():
            raise CheckpointError(f"{weights} carries no alexnet-deploy metadata and {sidecar.name} is missing")
        text, source = sidecar.read_text(), str(sidecar)
    try:
        meta = json.loads(text)
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{weights}: corrupt metadata in the {source}: {e}") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CheckpointError(f"{weights}: not an alexnet-deploy checkpoint (metadata format {meta.get('format')!r})"
                              if isinstance(meta, dict) else f"{weights}: metadata is not a JSON object")
    return meta


# ---- resume state: one folder per finished epoch, switched by an atomically written pointer file ----

class BackgroundSaver:
    """Writes resume states on a background thread so the next epoch trains meanwhile (2.2 s of a 25 s epoch here).

    ``save`` snapshots the tensors first (the optimizer keeps updating the live ones), waits for the previous write,
    then starts this one; ``wait`` joins the pending write and re-raises its error. The LATEST pointer moves only
    after a complete write, so a crash mid-write leaves the previous epoch resumable.
    """

    def __init__(self) -> None:
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    def save(self, run_dir: str | os.PathLike, epoch: int, state: dict[str, Any],
             model_state: dict[str, torch.Tensor], optimizer_state: dict[str, Any],
             best_weights: dict[str, torch.Tensor] | None, best_epoch: int | None = None) -> None:
        snapshot = ({k: v.detach().to("cpu", copy=True) for k, v in model_state.items()},
                    copy.deepcopy(optimizer_state))  # deepcopy clones the tensors in the optimizer state
        self.wait()
        args = (run_dir, epoch, copy.deepcopy(state), *snapshot, best_weights, best_epoch)
        self._thread = threading.Thread(target=self._write, args=args, name="resume-state-writer")
        self._thread.start()

    def _write(self, *args: Any) -> None:
        try:
            save_resume_state(*args)
        except BaseException as e:  # re-raised in the training thread by wait()
            self._error = e

    def wait(self) -> None:
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self._error is not None:
            error, self._error = self._error, None
            raise CheckpointError(f"could not save the resume state: {first_line(error)}") from error


def save_resume_state(run_dir: str | os.PathLike, epoch: int, state: dict[str, Any],
                      model_state: dict[str, torch.Tensor], optimizer_state: dict[str, Any],
                      best_weights: dict[str, torch.Tensor] | None, best_epoch: int | None = None) -> None:
    """Save everything ``--resume`` needs after finished epoch ``epoch`` (0-based).

    ``best_epoch`` names the epoch ``best_weights`` come from: when the previous state already holds that epoch's
    weights they are hard-linked instead of rewritten (228 MB per epoch saved on a 6-class AlexNet).
    """
    root = Path(run_dir) / "resume"
    root.mkdir(parents=True, exist_ok=True)
    for stale in root.glob(".epoch-*.partial"):  # left by a killed process or a failed write (a full disk)
        shutil.rmtree(stale, ignore_errors=True)
    name = f"epoch-{epoch:04d}"
    # Written complete in a hidden folder, then renamed: a full disk or a kill mid-write leaves the previous epoch
    # (which LATEST still names) intact and resumable, and no half-written epoch-N/ beside it.
    partial = root / f".{name}.partial"
    partial.mkdir()
    try:
        save_file({k: v.detach().cpu().contiguous() for k, v in model_state.items()},
                  str(partial / "model.safetensors"))
        torch.save(optimizer_state, partial / "optimizer.pt")
        if best_weights is not None:
            previous = _latest_folder(root)
            reusable = previous is not None and best_epoch is not None and _saved_best_epoch(previous) == best_epoch
            if not (reusable and _try_link(previous / "best.safetensors", partial / "best.safetensors")):
                save_file({k: v.contiguous() for k, v in best_weights.items()}, str(partial / "best.safetensors"))
            state = {**state, "best_weights_epoch": best_epoch}
        write_json_atomic(partial / "state.json", {"epoch": epoch, **state})
        _fsync_folder(partial)
        if (root / name).exists():
            shutil.rmtree(root / name)
        os.rename(partial, root / name)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    write_text_atomic(root / "LATEST", name + "\n")  # the switch: readers follow this pointer
    for old in root.glob("epoch-*"):
        if old.name != name:
            shutil.rmtree(old, ignore_errors=True)


def _fsync_folder(folder: Path) -> None:
    """The files' data on disk before the rename publishes them (a crash must not leave a complete-looking folder of
    empty files)."""
    for path in folder.iterdir():
        with open(path, "rb") as f:
            os.fsync(f.fileno())


def _latest_folder(root: Path) -> Path | None:
    pointer = root / "LATEST"
    return root / pointer.read_text().strip() if pointer.is_file() else None


def _saved_best_epoch(folder: Path) -> int | None:
    try:
        return json.loads((folder / "state.json").read_text()).get("best_weights_epoch")
    except (OSError, ValueError):
        return None


def _try_link(src: Path, dst: Path) -> bool:
    try:
        os.link(src, dst)
        return True
    except OSError:  # no such file, or a filesystem without hard links: write a copy instead
        return False


def load_resume_state(run_dir: str | os.PathLike) -> tuple[dict[str, Any], dict[str, torch.Tensor], dict[str, Any],
                                                           dict[str, torch.Tensor] | None]:
    """Return ``(state, model_state, optimizer_state, best_weights)`` of the last finished epoch."""
    root = Path(run_dir) / "resume"
    folder = _latest_folder(root)
    if folder is None:
        raise CheckpointError(f"nothing to resume in {run_dir}: no finished epoch recorded ({root / 'LATEST'} is "
                              "missing)")
    try:
        state = json.loads((folder / "state.json").read_text())
        model_state = load_file(str(folder / "model.safetensors"))
        optimizer_state = torch.load(folder / "optimizer.pt", weights_only=True, map_location="cpu")
        best_path = folder / "best.safetensors"
        best = load_file(str(best_path)) if best_path.is_file() else None
    except (OSError, ValueError, SafetensorError, RuntimeError, pickle.UnpicklingError) as e:
        # weights_only=True refuses anything but tensors and plain containers: a planted pickle lands here
        raise CheckpointError(f"the resume state in {folder} is unreadable or unsafe: {first_line(e)}") from None
    return state, model_state, optimizer_state, best

