"""Triton Inference Server model repository: one folder per model, written complete or not at all.

Layout (Triton's: a folder per model, numbered version folders, model files under the backend's default name)::

    DIR/alexnet/config.pbtxt          onnxruntime_onnx: I/O from the graph, dynamic batching, instance group
    DIR/alexnet/labels.txt            one class per line, the output's label_filename (classification extension)
    DIR/alexnet/1/model.onnx
    DIR/alexnet_openvino/...          the openvino backend on the same ONNX file (CPU), when asked for
    DIR/alexnet_trt/config.pbtxt      tensorrt_plan, only when a TensorRT engine exists for this ONNX file
    DIR/alexnet_trt/labels.txt
    DIR/alexnet_trt/1/model.plan

config.pbtxt is built in ``deploy/triton/config.py``; ``deploy/triton/measured.py`` applies what ``cli.py capacity``
measured (batching, instances, threads).
"""
from __future__ import annotations

import logging
import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

from deploy.triton.config import (LABELS_NAME, PlanFile, TritonConfig, TritonError, TritonOptions, onnx_config,
                                  openvino_config, plan_config)
from deploy.triton.measured import MeasuredConfig, apply_measured
from core.fileio import sha256_file

log = logging.getLogger(__name__)

VERSION = "1"  # the model version folder; Triton serves the highest number by default


@dataclass(frozen=True)
class TritonModel:
    path: Path                           # the model folder
    config: TritonConfig
    files: tuple[Path, ...]              # every file written, config first


@dataclass(frozen=True)
class TritonResult:
    repo: Path
    models: tuple[TritonModel, ...]
    notes: tuple[str, ...] = ()

    def __str__(self) -> str:
        return f"Triton repository {self.repo}: " + ", ".join(m.config.name for m in self.models)


def find_plan(onnx_path: str | os.PathLike, plan: str | os.PathLike | None = None,
              engine_cache: str | os.PathLike | None = None) -> tuple[PlanFile | None, str | None]:
    """``plan``, else the newest engine in the engine cache built from this exact file, else None; with a note when
    several cached engines qualify."""
    if plan is not None:
        return PlanFile.from_path(plan), None
    from runtimes.trt_engine import find_engines
    from runtimes.trt_runtime import default_engine_cache

    # The cache keys engines by the file's sha256 (core.onnx_file.model_sha256 equals it for a self-contained
    # file; the repository writer refuses files with external data anyway).
    engines = find_engines(engine_cache or default_engine_cache(), sha256_file(onnx_path))
    note = (f"{len(engines)} cached TensorRT engines were built from {Path(onnx_path).name}; using the newest, "
            f"{engines[0][0]}") if len(engines) > 1 else None
    return (PlanFile(*engines[0]) if engines else None), note


def check_free(repo: str | os.PathLike, names: list[str], overwrite: bool = False) -> None:
    """Raise TritonError when writing ``names`` would replace existing model folders and ``overwrite`` is off."""
    taken = [str(Path(repo) / n) for n in names if (Path(repo) / n).exists()]
    if taken and not overwrite:
        raise TritonError(f"{', '.join(taken)} already exist{'s' if len(taken) == 1 else ''}; pass --overwrite to "
                          f"replace {'it' if len(taken) == 1 else 'them'} (other models in {repo} are left alone)")


def write_triton_repository(onnx_path: str | os.PathLike, repo: str | os.PathLike,
                            options: TritonOptions = TritonOptions(), plan: PlanFile | None = None,
                            measured: Mapping[str, MeasuredConfig] | None = None) -> TritonResult:
    """Write ``repo/<name>/`` for the ONNX file and, with ``plan``, ``repo/<name>_trt/`` for its TensorRT engine.

    Each model folder is built complete in a hidden temporary folder inside ``repo`` and renamed into place, so Triton
    (or any reader) never sees half a model. Model files are copied, not linked: the repository keeps its version
    when the source is rewritten, and a copy gets ordinary permissions (atomically written sources are 0600).

    Args:
        onnx_path: A self-contained ONNX file (ideally written by ``export``: its metadata gives labels and the name).
        repo: The model repository folder (created if needed); other models in it are left alone.
        options: Name, batch limit, instances, kind, queue delay, overwrite.
        plan: A TensorRT engine built from this ONNX file (checked against its manifest when there is one).
        measured: Backend (onnxruntime, openvino, tensorrt) → the configuration ``cli.py capacity`` measured for it on
            this file (deploy.triton.measured): its batching, instances and threads replace the defaults, and the
            config's comment names the measurement.

    Raises:
        TritonError: an existing model folder without ``options.overwrite``, a plan built from another ONNX file,
            and the config errors of :func:`onnx_config` / :func:`plan_config`.
    """
    onnx_path, repo = Path(onnx_path), Path(repo)
    config = onnx_config(onnx_path, options)
    measured = measured or {}

    def tuned(cfg: TritonConfig) -> TritonConfig:
        return apply_measured(cfg, measured[cfg.backend]) if cfg.backend in measured else cfg

    models = [(tuned(config), onnx_path, "model.onnx")]
    if options.openvino:
        models.append((tuned(openvino_config(config, options)), onnx_path, "model.onnx"))
    if plan is not None:
        _check_plan_source(plan, onnx_path)
        models.append((tuned(plan_config(config, plan, options)), plan.path, "model.plan"))
    check_free(repo, [c.name for c, _, _ in models], options.overwrite)
    repo.mkdir(parents=True, exist_ok=True)
    staged: list[Path] = []
    written = []
    try:
        for cfg, source, filename in models:  # stage everything first: a failed copy leaves the repository as it was
            staged.append(_stage(repo, cfg, source, filename))
        for (cfg, _, filename), folder in zip(models, staged):
            target = repo / cfg.name
            _swap_into_place(folder, target)
            files = [target / "config.pbtxt", *([target / LABELS_NAME] if cfg.labels else []),
                     target / VERSION / filename]
            written.append(TritonModel(target, cfg, tuple(files)))
            log.debug("wrote Triton model %s", target)
    finally:
        for folder in staged:
            shutil.rmtree(folder, ignore_errors=True)  # leftovers only: renamed folders are gone from here
    notes = () if config.labels else ("no class names in the ONNX metadata: Triton returns class indices, no labels",)
    return TritonResult(repo, tuple(written), notes)


def _check_plan_source(plan: PlanFile, onnx_path: Path) -> None:
    if not plan.path.is_file():
        raise TritonError(f"TensorRT plan not found: {plan.path}")
    expected = (plan.manifest or {}).get("onnx_sha256")
    if expected and expected != (found := sha256_file(onnx_path)):
        raise TritonError(f"{plan.path} was built from another ONNX file (manifest sha256 {expected[:12]}…, "
                          f"{onnx_path.name} is {found[:12]}…); build an engine for this file")


def _stage(repo: Path, config: TritonConfig, source: Path, filename: str) -> Path:
    folder = repo / f".{config.name}.{uuid.uuid4().hex[:8]}.tmp"
    (folder / VERSION).mkdir(parents=True)  # mkdir honours the umask (mkdtemp would make it 0700)
    shutil.copyfile(source, folder / VERSION / filename)
    _fsync(folder / VERSION / filename)
    _write_synced(folder / "config.pbtxt", config.to_pbtxt())
    if config.labels:
        _write_synced(folder / LABELS_NAME, "".join(f"{n}\n" for n in config.labels))
    return folder


def _swap_into_place(folder: Path, target: Path) -> None:
    """Rename the staged folder onto ``target``; an existing target (``overwrite``) is moved aside, then removed."""
    old = target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}.old") if target.exists() else None
    try:
        if old is not None:
            os.rename(target, old)
        try:
            os.rename(folder, target)
        except OSError:
            if old is not None:
                os.rename(old, target)  # put the previous model back rather than leave none
            raise
    except OSError as e:
        raise TritonError(f"cannot move the new model into {target}: {e.strerror or e}") from None
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _write_synced(path: Path, text: str) -> None:
    path.write_text(text, encoding="utf-8")
    _fsync(path)


def _fsync(path: Path) -> None:
    """Flush to disk before the folder rename publishes the file."""
    with open(path, "rb+") as f:
        os.fsync(f.fileno())
