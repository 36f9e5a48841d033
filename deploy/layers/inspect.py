"""inspect: layer parity and layer time for every runtime × precision of one model's ONNX files, and the layer table
of one deployment (what the pipeline adds to its report)."""
from __future__ import annotations

import dataclasses
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from core.contract import INPUT_SHAPE, PRECISIONS
from core.errors import ToolkitError, UsageError
from core.load import LoadMonitor
from deploy.inputs import random_batch, real_images
from deploy.layers.capture import load_graph, reference_activations
from deploy.layers.parity import LayerParity, layer_parity
from deploy.layers.profile import LayerProfile, Timer, profile_layers
from deploy.models import TorchModel, reference_model
from deploy.progress import Progress
from runtimes.options import RuntimeOptions
from runtimes.registry import RUNTIME_NAMES, availability, runtime_class

log = logging.getLogger(__name__)
CHUNK = 32  # images per call for layer parity: a batch every runtime's profile covers


@dataclass(frozen=True)
class InspectPlan:
    """What to inspect; every field has a working default."""
    runtimes: tuple[str, ...] = RUNTIME_NAMES
    precisions: tuple[str, ...] = ()      # () = every precision of the files given, and bf16 when fp32 is there
    images: int = 32                      # validation images for layer parity (random inputs when there are none)
    batch_size: int = 32                  # the batch the layer times and the latency are measured at
    options: RuntimeOptions = RuntimeOptions()
    skip_unavailable: bool = True         # False: a named runtime or precision that cannot run here raises
    parity: bool = True
    profile: bool = True
    reference: Any = None                 # a checkpoint, nn.Module or callable; None = the ONNX metadata's
    allow_checkpoint_mismatch: bool = False  # use ``reference`` even when the metadata records other weights


@dataclass(frozen=True)
class Row:
    """One runtime × precision and the file it runs."""
    runtime: str
    precision: str
    file: Path

    def options(self, base: RuntimeOptions) -> RuntimeOptions:
        return dataclasses.replace(base, precision="bf16" if self.precision == "bf16" else None)


@dataclass(frozen=True)
class InspectReport:
    files: tuple[str, ...]
    images: int
    images_source: str
    batch_size: int
    parity: tuple[LayerParity, ...]
    profiles: tuple[LayerProfile, ...]
    skipped: dict[str, str] = field(default_factory=dict)   # "runtime precision" → why
    timings_s: dict[str, float] = field(default_factory=dict)
    interrupted: bool = False
    load: dict[str, Any] | None = None   # other processes' CPU share while the layer times were taken (core.load)

    def to_dict(self) -> dict[str, Any]:
        from export.layers import LAYERS

        return {"format": "alexnet-deploy/layers-report", "format_version": 1, "layers": list(LAYERS),
                "files": list(self.files), "images": self.images, "images_source": self.images_source,
                "batch_size": self.batch_size, "parity": [p.to_dict() for p in self.parity],
                "profiles": [p.to_dict() for p in self.profiles], "skipped": dict(self.skipped),
                "timings_s": dict(self.timings_s), "interrupted": self.interrupted, "load": self.load}


def plan_rows(files: Sequence[Path], plan: InspectPlan) -> tuple[list[Row], dict[str, str]]:
    """Which file each runtime × precision runs (its preferred LRN form when both are given), and what is skipped.

    Raises:
        UsageError: a precision no file provides. RuntimeUnavailableError (``skip_unavailable`` False): a runtime
            that is not available here, or that cannot compute a precision asked for by name.
    """
    from core.onnx_file import read_onnx_info

    infos = [read_onnx_info(f) for f in files]
    own = [i.precision for i in infos]
    precisions = plan.precisions or tuple(p for p in PRECISIONS if p in own or p == "bf16" and "fp32" in own)
    rows, skipped = [], {}
    for precision in precisions:
        wanted = "fp32" if precision == "bf16" else precision
        if wanted not in own:
            raise UsageError(f"--precision {precision}: none of the files is {wanted} (they are {', '.join(own)})")
        for name in plan.runtimes:
            installed, reason = availability(name)
            if installed:
                reason = _unsupported(name, precision)
            if reason:  # a named runtime must run; a precision only when it was asked for by name too
                if not plan.skip_unavailable and (not installed or plan.precisions):
                    raise _unavailable(name, reason)
                skipped[f"{name} {precision}"] = reason
                continue
            forms = [(i.meta.lrn if i.meta else "", i.path) for i in infos if i.precision == wanted]
            preferred = runtime_class(name).preferred_lrn
            rows.append(Row(name, precision, next((p for lrn, p in forms if lrn == preferred), forms[0][1])))
    return rows, skipped


def _unsupported(name: str, precision: str) -> str:
    """Why an installed runtime cannot compute ``precision`` ("" when it can)."""
    if name == "torch" and precision in ("fp16", "int8"):
        return "torch runs the PyTorch checkpoint (fp32 or bf16); fp16 and int8 are properties of an ONNX file"
    ok, reason = availability(name, precision) if precision == "bf16" else (True, "")
    return "" if ok else reason


def _unavailable(name: str, reason: str) -> ToolkitError:
    from runtimes.errors import RuntimeUnavailableError

    return RuntimeUnavailableError(f"{name}: {reason}")


def inspect_layers(files: Sequence[str | os.PathLike], plan: InspectPlan = InspectPlan(), timer: Timer | None = None,
                   progress: Progress | None = None) -> InspectReport:
    """Layer parity and layer time of ``files`` (one model's exports) on every runtime × precision of ``plan``.

    Args:
        files: ONNX files exported from one checkpoint (any precisions and LRN forms).
        plan: Runtimes, precisions, images, batch size, runtime settings.
        timer: Measures a runtime's end-to-end latency for the layer-time table (deploy/bench/timing.py's measure);
            None leaves it out.
        progress: A bar per phase (parity, time).

    Raises:
        UsageError: files of different checkpoints, a precision no file has. LayerMapError: a file is no exported
            AlexNet. ToolkitError: no PyTorch checkpoint to compare with.
    Ctrl-C returns what finished, flagged ``interrupted``.
    """
    progress = progress or Progress()
    paths = [Path(f) for f in files]
    rows, skipped = plan_rows(paths, plan)
    graphs = {r.file: load_graph(r.file) for r in rows}  # mapped before anything runs: a bad file fails now
    needs_torch = plan.parity or any(r.runtime == "torch" for r in rows)
    torch_model, meta = _reference(paths, plan, required=needs_torch)
    x, source = _images(meta, plan.images)
    chunk = min(CHUNK, len(x))
    started, timings = time.perf_counter(), {}
    parity: list[LayerParity] = []
    profiles: list[LayerProfile] = []
    interrupted, load = False, None
    try:
        if plan.parity:
            reference = reference_activations(torch_model, next(iter(graphs.values())).info, plan.options, x, chunk)
            _each(rows, progress, "layer parity", lambda r: layer_parity(
                r.runtime, graphs[r.file], torch_model, r.options(plan.options), x, reference, chunk), parity)
            timings["parity"] = time.perf_counter() - started
        if plan.profile:
            t, monitor = time.perf_counter(), LoadMonitor()
            _each(rows, progress, f"layer time at batch {plan.batch_size}", lambda r: profile_layers(
                r.runtime, graphs[r.file].info, graphs[r.file].layer_map, torch_model, r.options(plan.options), x,
                plan.batch_size, timer), profiles)
            timings["time"] = time.perf_counter() - t
            load = monitor.summary()
    except KeyboardInterrupt:
        interrupted = True
    timings["total"] = time.perf_counter() - started
    return InspectReport(tuple(str(p) for p in paths), len(x), source, plan.batch_size, tuple(parity),
                         tuple(profiles), skipped, timings, interrupted, load)


def _each(rows: Sequence[Row], progress: Progress, label: str, work, out: list) -> None:
    """``work(row)`` for every row into ``out`` (so Ctrl-C keeps what finished), with one progress bar."""
    start = time.perf_counter()
    progress.start(label, len(rows), None)
    try:
        for done, row in enumerate(rows, 1):
            out.append(work(row))
            progress.step(done, time.perf_counter() - start)
    finally:
        progress.end()


def _reference(paths: Sequence[Path], plan: InspectPlan, required: bool) -> tuple[TorchModel | None, Any]:
    """The PyTorch checkpoint every file was exported from (None when nothing needs it), and their metadata."""
    from core.onnx_file import read_onnx_info

    metas = [read_onnx_info(p).meta for p in paths]
    shas = {m.checkpoint_sha256 for m in metas if m is not None}
    if len(shas) > 1:
        raise UsageError("the files were exported from different checkpoints (their metadata records "
                         f"{len(shas)} checkpoint sha256s); inspect one model's exports at a time")
    meta = next((m for m in metas if m is not None), None)
    if not required and plan.reference is None:
        return None, meta
    torch_model, why = reference_model(meta, plan.reference, plan.allow_checkpoint_mismatch)
    if torch_model is None:
        raise ToolkitError(f"layer parity compares with the PyTorch checkpoint, and there is none: {why}; pass "
                           "--reference RUN")
    return torch_model, meta


def _images(meta, count: int) -> tuple[np.ndarray, str]:
    x, note = real_images(meta, INPUT_SHAPE, count)
    if x is not None:
        return x, note
    log.info("%s; layer parity runs on fixed-seed random inputs", note or "no validation images")
    return random_batch(INPUT_SHAPE, count, seed=0), f"{count} fixed-seed random inputs ({note or 'no images'})"


@dataclass(frozen=True)
class LayerTable:
    """One deployment's layer parity and layer time: what the pipeline adds for its recommendation."""
    parity: LayerParity
    profile: LayerProfile

    def to_dict(self) -> dict[str, Any]:
        return {"parity": self.parity.to_dict(), "profile": self.profile.to_dict()}


def layer_table(runtime: str, precision: str, onnx_path: str | os.PathLike, torch_model: TorchModel,
                images: np.ndarray, options: RuntimeOptions = RuntimeOptions(), batch_size: int = 32,
                timer: Timer | None = None) -> LayerTable:
    """Layer parity and layer time of one deployment (runtime, precision, file).

    Args:
        runtime: A registry name. precision: fp32, fp16, int8 (the file's own) or bf16 (an fp32 file in bf16).
        onnx_path: The file it deploys. torch_model: The PyTorch checkpoint.
        images: Validation images (``N x 3 x 227 x 227`` float32; 32 are plenty).
        options: Runtime settings; batch_size: where the layer times are taken; timer: see :func:`inspect_layers`.

    Raises:
        LayerMapError: the file is no exported AlexNet. ToolkitError: no checkpoint.
    """
    graph = load_graph(onnx_path)
    row = Row(runtime, precision, Path(onnx_path))
    x = np.ascontiguousarray(images, dtype=np.float32)
    chunk = min(CHUNK, len(x))
    reference = reference_activations(torch_model, graph.info, options, x, chunk)
    parity = layer_parity(runtime, graph, torch_model, row.options(options), x, reference, chunk)
    profile = profile_layers(runtime, graph.info, graph.layer_map, torch_model, row.options(options), x, batch_size,
                             timer)
    return LayerTable(parity, profile)
