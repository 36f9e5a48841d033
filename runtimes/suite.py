"""The bench orchestrator: every runtime × batch size, cold start and parity against the reference, in one report."""
from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from export.parity import compare_outputs
from export.spec import tolerance_for
from runtimes.base import Runtime, TensorSpec
from runtimes.bench import BenchConfig, Measurement, Progress, measure
from runtimes.errors import BenchError, RuntimeUnavailableError
from runtimes.factory import RuntimeOptions, make_runtime, reference_runtime
from runtimes.inputs import random_batch, real_images
from runtimes.onnx_info import OnnxInfo, read_onnx_info
from runtimes.registry import RUNTIME_NAMES, availability
from runtimes.reports import BenchReport, BenchResult, ColdStart, LatencyStats, RuntimeParity
from trainer.errors import ToolkitError

log = logging.getLogger(__name__)
_LOOSENESS = {"fp32": 0, "fp16": 1, "int8": 2}  # the precisions export.spec has tolerances for


@dataclass(frozen=True)
class SuiteConfig:
    runtimes: tuple[str, ...] = RUNTIME_NAMES
    batch_sizes: tuple[int, ...] = (1, 8, 32)
    bench: BenchConfig = field(default_factory=BenchConfig)
    options: RuntimeOptions = field(default_factory=RuntimeOptions)
    skip_unavailable: bool = True          # False: an unavailable runtime raises RuntimeUnavailableError up front
    parity_samples: int = 16               # fixed-seed random inputs compared with the reference
    parity_images: int = 64                # real validation images (0 = none)
    parity_batch: int = 8                  # inputs per call during parity
    seed: int = 0


@dataclass
class _State:
    results: list[BenchResult] = field(default_factory=list)
    parity: dict[str, RuntimeParity] = field(default_factory=dict)
    cold: dict[str, ColdStart] = field(default_factory=dict)
    described: dict[str, dict[str, Any]] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    reference: dict[str, Any] = field(default_factory=dict)
    interrupted: bool = False


def run_bench(onnx_path: str | os.PathLike, config: SuiteConfig, reference: Any = None,
              progress: Progress | None = None) -> BenchReport:
    """Benchmark ``onnx_path`` on ``config.runtimes`` and check each runtime's parity with the reference.

    Args:
        onnx_path: The ONNX model.
        config: Runtimes, batch sizes, measurement and parity settings.
        reference: The PyTorch reference: a checkpoint path (run folder or .safetensors) or an ``nn.Module`` (or a
            callable returning one). Default: the checkpoint named in the ONNX metadata when it exists, else ONNX
            Runtime CPU on the same file.
        progress: Progress hooks (the CLI draws bars).

    Returns:
        The report; Ctrl-C returns what was measured so far with ``interrupted`` set.

    Raises:
        RuntimeUnavailableError: ``skip_unavailable`` is False and a requested runtime cannot run here.
        BenchError, CheckpointError, RuntimeLoadError: bad settings, reference or model.
    """
    from trainer.device import tune_allocator

    progress = progress or Progress()
    info = read_onnx_info(onnx_path)
    meta = info.meta
    state = _State()
    source = _resolve_reference(reference, meta, state)
    runnable = _runnable(config, source, state)
    batch_sizes = _batch_sizes(config.batch_sizes, info, state)
    tuned = tune_allocator()  # glibc malloc otherwise costs torch eager 30-50 % on the CPU
    _set_torch_threads(config.options.threads)
    from runtimes.env import collect_environment

    env = collect_environment(allocator_tuned=tuned, ort_threads=_threads(config.options.threads))
    try:
        sets = _parity_inputs(info, meta, config, state)
        progress.stage(f"reference: {'torch' if source is not None else 'onnxruntime'}")
        with reference_runtime(source, info, config.options) as ref:
            ref_outputs = {kind: infer_in_chunks(ref, x, _chunk(info, config)) for kind, x in sets}
            state.reference.update(ref.describe(), name=ref.name)
        for name in runnable:
            if _bench_runtime(name, onnx_path, info, source, ref_outputs, sets, batch_sizes, config, state,
                              progress):
                break
    except KeyboardInterrupt:
        state.interrupted = True
    return _report(onnx_path, info, env, state)


def _bench_runtime(name: str, onnx_path, info: OnnxInfo, source, ref_outputs, sets, batch_sizes, config: SuiteConfig,
                   state: _State, progress: Progress) -> bool:
    """Load, first inference, parity and the batch sweep for one runtime; True when interrupted."""
    progress.stage(f"{name}: loading")
    rt = make_runtime(name, onnx_path, info, source, config.options, batch_sizes)
    try:
        start = time.perf_counter()
        rt.load()
        load_ms = (time.perf_counter() - start) * 1e3
        specs = rt.input_specs()
        start = time.perf_counter()
        rt.infer(make_feeds(specs, batch_sizes[0], config.seed))
        first_ms = (time.perf_counter() - start) * 1e3
        described = state.described[name] = rt.describe()
        details = {k: described[k] for k in ("engine_source", "engine_s", "engine_path", "compile") if k in described}
        state.cold[name] = ColdStart(load_ms, first_ms, batch_sizes[0], details)
        progress.stage(f"{name}: parity")
        parity = state.parity[name] = _parity(rt, ref_outputs, sets, state.reference, config, info)
        for batch in batch_sizes:
            m = measure(rt, make_feeds(specs, batch, config.seed + batch), config.bench, progress, f"{name} b{batch}")
            state.results.append(_result(rt, m, parity, config.bench))
            if m.interrupted:
                state.interrupted = True
                return True
    except RuntimeUnavailableError as e:
        if not config.skip_unavailable:
            raise
        state.skipped[name] = str(e)
    except ToolkitError as e:
        log.error("%s failed: %s", name, e)
        state.errors[name] = str(e)
    finally:
        rt.close()
    return False


def make_feeds(specs: Sequence[TensorSpec], batch: int, seed: int) -> dict[str, np.ndarray]:
    """Fixed-seed random feeds for every input at ``batch``."""
    feeds = {}
    for i, spec in enumerate(specs):
        if any(d is None for d in spec.shape[1:]):
            raise BenchError(f"input {spec.name!r} {spec.shape_str()}: only the batch dimension may be dynamic")
        feeds[spec.name] = random_batch(spec.shape[1:], batch, seed + 1000 * i, spec.dtype)
    return feeds


def infer_in_chunks(rt: Runtime, x: np.ndarray, chunk: int) -> dict[str, np.ndarray]:
    """Run a single-input runtime over ``x`` in batches of ``chunk`` and concatenate the outputs."""
    specs = rt.input_specs()
    if len(specs) != 1:
        raise BenchError(f"parity feeds single-input models; {rt.name} has {len(specs)} inputs")
    parts: dict[str, list[np.ndarray]] = {}
    for i in range(0, len(x), chunk):
        for name, value in rt.infer({specs[0].name: x[i:i + chunk].astype(specs[0].dtype, copy=False)}).items():
            parts.setdefault(name, []).append(value)
    return {name: np.concatenate(values) for name, values in parts.items()}


def _parity(rt: Runtime, ref_outputs, sets, reference: dict[str, Any], config: SuiteConfig,
            info: OnnxInfo) -> RuntimeParity:
    precision = _loosest(rt.precision, reference.get("precision", "fp32"))
    tolerance = tolerance_for(precision)
    checks = tuple(compare_outputs(ref_outputs[kind], infer_in_chunks(rt, x, _chunk(info, config)), tolerance,
                                   reference_name=reference["name"], candidate_name=rt.name, inputs=kind)
                   for kind, x in sets)
    note = f"{precision} tolerance"
    if config.options.allow_tf32 and rt.device == "cuda" and rt.precision == "fp32":
        note += "; TF32 allowed, so fp32 parity may legitimately miss"
    return RuntimeParity(reference["name"], checks, note)


def _loosest(*precisions: str) -> str:
    """The precision whose tolerance applies to a pair (bf16 is judged like fp16)."""
    known = [{"bf16": "fp16"}.get(p, p) for p in precisions]
    return max(known, key=lambda p: _LOOSENESS.get(p, 1))


def _result(rt: Runtime, m: Measurement, parity: RuntimeParity, config: BenchConfig) -> BenchResult:
    host, dev = LatencyStats.from_samples(m.host_ms), LatencyStats.from_samples(m.device_ms or ())
    warnings = []
    if host and host.cv > config.cv_warn:
        warnings.append(f"unstable: CV {host.cv:.1%} > {config.cv_warn:.0%} (other load on this machine? measure "
                        "longer with --duration or warm up more)")
    if m.interrupted:
        warnings.append("interrupted: partial measurement")
    return BenchResult(rt.name, rt.precision, m.batch_size, rt.device, host, dev,
                       m.batch_size * 1e3 / host.mean if host and host.mean > 0 else 0.0,
                       m.batch_size * 1e3 / dev.mean if dev and dev.mean > 0 else None,
                       m.warmup_iters, m.first_call_ms, parity, interrupted=m.interrupted, warnings=tuple(warnings),
                       samples_ms=m.host_ms)


def _report(onnx_path, info: OnnxInfo, env: dict[str, Any], state: _State) -> BenchReport:
    names = [r.runtime for r in state.results]
    baseline = state.reference.get("name") if state.reference.get("name") in names else (names[0] if names else None)
    base = {r.batch_size: r.throughput for r in state.results if r.runtime == baseline}
    results = tuple(replace(r, vs_reference=r.throughput / base[r.batch_size] if base.get(r.batch_size) else None)
                    for r in state.results)
    return BenchReport(str(onnx_path), info.precision, env, dict(state.reference), results, dict(state.parity),
                       dict(state.cold), dict(state.described), baseline, dict(state.skipped), dict(state.errors),
                       tuple(n for n in state.notes if n), state.interrupted)


def _resolve_reference(reference: Any, meta, state: _State) -> Any:
    """The PyTorch model source for the reference and the torch runtime, or None (then ONNX Runtime CPU)."""
    from trainer.checkpoint import resolve_checkpoint

    if reference is not None:
        if isinstance(reference, (str, os.PathLike)):
            reference = resolve_checkpoint(reference)
            state.reference["source"] = f"--reference {reference}"
        else:
            state.reference["source"] = "given model"
        return reference
    if meta is not None and meta.checkpoint_path and Path(meta.checkpoint_path).exists():
        path = resolve_checkpoint(meta.checkpoint_path)
        state.reference["source"] = f"checkpoint from the ONNX metadata: {path}"
        _check_checkpoint_hash(path, meta.checkpoint_sha256, state)
        return path
    why = ("the ONNX file carries no alexnet-deploy metadata" if meta is None else
           f"the checkpoint named in its metadata ({meta.checkpoint_path or 'none'}) is not there")
    state.reference["source"] = f"onnxruntime CPU on the same file: {why}; pass --reference RUN for PyTorch"
    state.notes.append(f"parity reference is ONNX Runtime CPU because {why}")
    return None


def _check_checkpoint_hash(path: Path, expected: str, state: _State) -> None:
    from trainer.fileio import sha256_file

    if expected and sha256_file(path) != expected:
        state.notes.append(f"{path} differs from the checkpoint the ONNX file was exported from (sha256 mismatch): "
                           "parity compares different weights")


def _runnable(config: SuiteConfig, source, state: _State) -> list[str]:
    runnable = []
    for name in config.runtimes:
        ok, reason = availability(name)
        if ok and name == "torch" and source is None:
            ok, reason = False, ("the torch runtime needs the PyTorch model: pass --reference RUN (the ONNX "
                                 "metadata names no checkpoint that exists)")
            if not config.skip_unavailable:
                raise BenchError(reason)
        if ok:
            runnable.append(name)
        elif config.skip_unavailable:
            state.skipped[name] = reason
        else:
            raise RuntimeUnavailableError(f"{name}: {reason}")
    return runnable


def _batch_sizes(requested: Sequence[int], info: OnnxInfo, state: _State) -> list[int]:
    sizes = sorted(set(int(b) for b in requested))
    if not sizes or sizes[0] < 1:
        raise BenchError(f"batch sizes must be >= 1, got {list(requested)}")
    static = info.static_batch
    if static is not None and sizes != [static]:
        state.notes.append(f"the graph has a static batch of {static}: measuring only that (asked for {sizes})")
        return [static]
    return sizes


def _parity_inputs(info: OnnxInfo, meta, config: SuiteConfig, state: _State) -> list[tuple[str, np.ndarray]]:
    sample_shape = info.inputs[0].shape[1:]
    chunk = _chunk(info, config)
    n = max(chunk, config.parity_samples // chunk * chunk)
    sets = [("random", random_batch(sample_shape, n, config.seed))]
    images, note = real_images(meta, sample_shape, config.parity_images)
    state.notes.append(note)
    if images is not None and len(images) >= chunk:
        sets.append(("images", images[: len(images) // chunk * chunk]))
    return sets


def _chunk(info: OnnxInfo, config: SuiteConfig) -> int:
    return info.static_batch or max(1, config.parity_batch)


def _threads(threads: int | None) -> int:
    from runtimes.ort_runtime import usable_cores

    return threads or usable_cores()


def _set_torch_threads(threads: int | None) -> None:
    import torch

    torch.set_num_threads(_threads(threads))
