"""run_bench / run_benches: every runtime × batch size of one or several ONNX files, with cold start and parity against
the reference, timed in interleaved rounds."""
from __future__ import annotations

import dataclasses
import logging
import os
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from core.contract import MAX_BATCH
from core.errors import ToolkitError, UsageError, first_line
from core.host import allocator_tuned, torch_threads
from core.load import LoadMonitor
from core.onnx_file import OnnxInfo, read_onnx_info
from deploy.inputs import infer_in_chunks, make_feeds, random_batch, real_images
from deploy.models import TorchModel, make_runtime, reference_model, reference_runtime
from deploy.bench.reports import BenchReport, BenchResult, ColdStart, LatencyStats, RuntimeParity
from deploy.progress import Progress
from deploy.bench.stats import replicates, interval
from deploy.bench.timing import BenchConfig, Cell, Measurement, measure_interleaved
from export.spec import tolerance_for
from runtimes.base import Runtime
from runtimes.errors import RuntimeUnavailableError
from runtimes.options import RuntimeOptions
from runtimes.parity import compare_outputs
from runtimes.registry import RUNTIME_NAMES, availability

log = logging.getLogger(__name__)
_LOOSENESS = {"fp32": 0, "fp16": 1, "bf16": 2, "int8": 3}  # which precision's tolerance a pair is judged by


@dataclass(frozen=True)
class BenchPlan:
    """What one bench run measures and checks."""
    runtimes: tuple[str, ...] = RUNTIME_NAMES
    batch_sizes: tuple[int, ...] = (1, 8, 32)
    timing: BenchConfig = field(default_factory=BenchConfig)
    options: RuntimeOptions = field(default_factory=RuntimeOptions)
    skip_unavailable: bool = True          # False: an unavailable runtime raises RuntimeUnavailableError up front
    parity_samples: int = 16               # fixed-seed random inputs compared with the reference
    parity_images: int = 64                # real validation images (0 = none)
    parity_batch: int = 8                  # inputs per call during parity
    seed: int = 0
    allow_checkpoint_mismatch: bool = False  # compare with a checkpoint whose sha256 the ONNX metadata does not list


@dataclass(frozen=True)
class BenchJob:
    """One ONNX file and the runtimes that run it, in its own precision (None) or bf16."""
    onnx_path: Path
    runtimes: tuple[str, ...]
    precision: str | None = None


@dataclass
class _State:
    """One job's progress: what it loaded, checked and measured."""
    path: Path
    plan: BenchPlan
    info: OnnxInfo | None = None
    torch_model: TorchModel | None = None
    batch_sizes: list[int] = field(default_factory=list)
    loaded: dict[str, tuple[Runtime, RuntimeParity, Any]] = field(default_factory=dict)  # name → (rt, parity, model)
    results: list[BenchResult] = field(default_factory=list)
    parity: dict[str, RuntimeParity] = field(default_factory=dict)
    cold: dict[str, ColdStart] = field(default_factory=dict)
    described: dict[str, dict[str, Any]] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    reference: dict[str, Any] = field(default_factory=dict)
    failure: str | None = None


def run_bench(onnx_path: str | os.PathLike, plan: BenchPlan, reference: str | os.PathLike | None = None,
              progress: Progress | None = None) -> BenchReport:
    """Benchmark ``onnx_path`` on ``plan.runtimes`` and check each runtime's parity with the reference.

    Args:
        onnx_path: The ONNX model.
        plan: Runtimes, batch sizes, measurement and parity settings.
        reference: The PyTorch reference checkpoint (run folder or .safetensors). Default: the checkpoint named in
            the ONNX metadata when it exists, else ONNX Runtime CPU on the same file.
        progress: Progress hooks (the CLI draws bars).

    Returns:
        The report; Ctrl-C returns what was measured so far with ``interrupted`` set.

    Raises:
        RuntimeUnavailableError: ``skip_unavailable`` is False and a requested runtime cannot run here.
        UsageError, CheckpointError, CheckpointMismatchError, OnnxFileError: bad settings, reference or model.
    """
    job = BenchJob(Path(onnx_path), plan.runtimes, plan.options.precision)
    return run_benches([job], plan, reference, progress)[0]


def run_benches(jobs: Sequence[BenchJob], plan: BenchPlan, reference: Any = None, progress: Progress | None = None,
                raise_job_errors: bool = True) -> list[BenchReport]:
    """Several files × runtimes measured together: each job's runtimes are loaded and parity-checked, then every
    runtime × batch size of every job is timed in the same interleaved rounds (deploy/bench/timing.py), so the rows
    of all the reports compare like with like. One report per job, in order (see ``run_bench``).

    With ``raise_job_errors`` off, a job whose file or reference fails (a ToolkitError before any runtime ran) gets
    a report with ``failure`` set and the other jobs go on.
    """
    progress = progress or Progress()
    states, interrupted = [], False
    with torch_threads(plan.options.threads) as threads:
        from core.environment import collect_environment

        env = collect_environment(allocator_tuned=allocator_tuned(), ort_threads=threads)
        try:
            for job in jobs:
                states.append(_State(job.onnx_path, dataclasses.replace(with_precision(plan, job.precision),
                                                                        runtimes=job.runtimes)))
                try:
                    _load_job(states[-1], reference, progress)
                except ToolkitError as e:
                    if raise_job_errors:
                        raise
                    states[-1].failure = str(e)
            monitor = LoadMonitor(canary=True)
            interrupted = _time_all(states, plan, progress, monitor)
            env = {**env, "load": monitor.summary()}
        except KeyboardInterrupt:
            interrupted = True
        finally:
            for state in states:
                for rt, _, _ in state.loaded.values():
                    rt.close()
    if env.get("load", {}).get("warning"):
        log.warning("%s", env["load"]["warning"])
    return [_report(s, env, interrupted) for s in states] + [
        _report(_State(j.onnx_path, plan), env, True) for j in jobs[len(states):]]


def _load_job(state: _State, reference: Any, progress: Progress) -> None:
    """Read the file, find the reference, load every runtime, time its cold start and check its parity."""
    plan = state.plan
    info = state.info = read_onnx_info(state.path)
    torch_model, source = reference_model(info.meta, reference, plan.allow_checkpoint_mismatch)
    state.torch_model = torch_model
    state.reference["source"] = source if torch_model else (
        f"onnxruntime CPU on the same file: {source}; pass --reference RUN for PyTorch")
    if torch_model is None:
        state.notes.append(f"parity reference is ONNX Runtime CPU because {source}")
    runnable = _runnable(plan, torch_model, state)
    state.batch_sizes = _batch_sizes(plan.batch_sizes, info, state)
    sets = _parity_inputs(info, plan, state)
    progress.stage(f"reference: {'torch' if torch_model is not None else 'onnxruntime'}")
    with reference_runtime(torch_model, info, plan.options) as ref:
        ref_outputs = {kind: infer_in_chunks(ref, x, _chunk(info, plan)) for kind, x in sets}
        state.reference.update(ref.describe(), name=ref.name)
    for name in runnable:
        _load_runtime(name, state, ref_outputs, sets, progress)


def _load_runtime(name: str, state: _State, ref_outputs, sets, progress: Progress) -> None:
    """Load, first inference and parity for one runtime; it stays loaded for the timing (or is recorded failed)."""
    plan, info, batch_sizes = state.plan, state.info, state.batch_sizes
    progress.stage(f"{name}: loading {state.path.name}")
    try:
        rt = make_runtime(name, info.path, info, state.torch_model, plan.options, batch_sizes)
    except RuntimeUnavailableError as e:
        _skip_or_raise(name, e, plan, state)
        return
    kept = False
    try:
        start = time.perf_counter()
        rt.load()
        load_ms = (time.perf_counter() - start) * 1e3
        start = time.perf_counter()
        rt.infer(make_feeds(rt.input_specs(), batch_sizes[0], plan.seed))
        first_ms = (time.perf_counter() - start) * 1e3
        described = state.described[name] = rt.describe()
        details = {k: described[k] for k in ("engine_source", "engine_s", "engine_path", "compile") if k in described}
        state.cold[name] = ColdStart(load_ms, first_ms, batch_sizes[0], details)
        progress.stage(f"{name}: parity")
        parity = _parity(rt, ref_outputs, sets, state.reference, plan, info)
        if not parity.passed and state.torch_model is not None:
            parity = replace(parity, divergence=_divergence(name, state, sets))
        state.parity[name] = parity
        state.loaded[name], kept = (rt, parity, described.get("model")), True
    except RuntimeUnavailableError as e:
        _skip_or_raise(name, e, plan, state)
    except ToolkitError as e:
        log.error("%s failed: %s", name, e)
        state.errors[name] = str(e)
    except MemoryError:
        state.errors[name] = f"out of memory at batch sizes {batch_sizes}; try smaller --batch-sizes"
    finally:
        if not kept:
            rt.close()


def _divergence(name: str, state: _State, sets: list[tuple[str, np.ndarray]]) -> str:
    """Where a failing runtime first leaves its tolerance: the layer comparison on this row only (deploy/layers/),
    on the validation images when there are any."""
    from deploy.layers.parity import first_divergence

    x = dict(sets).get("images", dict(sets)["random"])
    try:
        found = first_divergence(state.path, name, state.plan.options, state.torch_model, x)
    except ToolkitError as e:
        return f"layer comparison not possible: {first_line(e)}"
    return str(found) if found else ("every layer is within its layer tolerance: the miss is in the logits' own "
                                     "tolerance only")


def _time_all(states: list[_State], plan: BenchPlan, progress: Progress, monitor: LoadMonitor) -> bool:
    """Every loaded runtime × batch size of every job in one interleaved measurement; True when interrupted."""
    cells, owners = [], []
    for state in states:
        for name, (rt, parity, model) in state.loaded.items():
            specs = rt.input_specs()
            for batch in state.batch_sizes:
                cells.append(Cell(rt, make_feeds(specs, batch, plan.seed + batch), f"{name} b{batch}"))
                owners.append((state, name, parity, model))
    if not cells:
        return False
    progress.stage(f"timing {len(cells)} runtime × batch cells in {plan.timing.rounds} interleaved rounds")
    measured = measure_interleaved(cells, plan.timing, progress, monitor)
    for cell, m, (state, name, parity, model) in zip(cells, measured, owners):
        if m.error is not None and name not in state.errors:
            log.error("%s failed: %s", name, m.error)
            state.errors[name] = m.error
        if m.host_ms:
            state.results.append(_result(cell.runtime, m, parity, plan.timing, model))
    return any(m.interrupted for m in measured)


def _skip_or_raise(name: str, error: RuntimeUnavailableError, plan: BenchPlan, state: _State) -> None:
    if not plan.skip_unavailable:
        raise error
    state.skipped[name] = str(error)


def _parity(rt: Runtime, ref_outputs, sets, reference: dict[str, Any], plan: BenchPlan,
            info: OnnxInfo) -> RuntimeParity:
    precision = max((rt.precision, reference.get("precision", "fp32")), key=lambda p: _LOOSENESS.get(p, 1))
    tolerance = tolerance_for(precision)
    checks = tuple(compare_outputs(ref_outputs[kind], infer_in_chunks(rt, x, _chunk(info, plan)), tolerance,
                                   reference_name=reference["name"], candidate_name=rt.name, inputs=kind)
                   for kind, x in sets)
    note = f"{precision} tolerance"
    if plan.options.allow_tf32 and rt.device == "cuda" and rt.precision == "fp32":
        note += "; TF32 allowed, so fp32 parity may legitimately miss"
    return RuntimeParity(reference["name"], checks, note)


def _result(rt: Runtime, m: Measurement, parity: RuntimeParity, config: BenchConfig, model: Any) -> BenchResult:
    host, dev = LatencyStats.from_samples(m.host_ms), LatencyStats.from_samples(m.device_ms or ())
    reps = replicates(m.rounds_ms)
    p50_ci = interval(reps.median) if reps else None
    mean_lo, mean_hi = interval(reps.mean) if reps else (0.0, 0.0)
    tp_ci = (m.batch_size * 1e3 / mean_hi, m.batch_size * 1e3 / mean_lo) if mean_lo > 0 else None
    warnings = []
    if host and host.cv > config.cv_warn:
        warnings.append(f"unstable: CV {host.cv:.1%} > {config.cv_warn:.0%} (other load on this machine? measure "
                        "longer with --duration or warm up more)")
    if m.interrupted:
        warnings.append("interrupted: partial measurement")
    if m.error:
        warnings.append(f"failed while timed: {m.error}")
    return BenchResult(rt.name, rt.precision, m.batch_size, rt.device, host, dev,
                       m.batch_size * 1e3 / host.mean if host and host.mean > 0 else 0.0,
                       m.batch_size * 1e3 / dev.mean if dev and dev.mean > 0 else None,
                       m.warmup_iters, m.first_call_ms, parity, interrupted=m.interrupted, warnings=tuple(warnings),
                       rounds_ms=m.rounds_ms, p50_ci95=p50_ci, throughput_ci95=tp_ci,
                       model=str(model) if model else None)


def _report(state: _State, env: dict[str, Any], interrupted: bool) -> BenchReport:
    names = [r.runtime for r in state.results]
    ref = state.reference.get("name")
    baseline = ref if ref in names else (names[0] if names else None)
    base = {r.batch_size: r.throughput for r in state.results if r.runtime == baseline}
    results = tuple(replace(r, vs_reference=r.throughput / base[r.batch_size] if base.get(r.batch_size) else None)
                    for r in state.results)
    precision = state.info.precision if state.info else "unknown"
    return BenchReport(str(state.path), precision, env, dict(state.reference), results, dict(state.parity),
                       dict(state.cold), dict(state.described), baseline, dict(state.skipped), dict(state.errors),
                       tuple(n for n in state.notes if n), interrupted, state.failure)


def _runnable(plan: BenchPlan, torch_model: TorchModel | None, state: _State) -> list[str]:
    runnable = []
    for name in plan.runtimes:
        ok, reason = availability(name, plan.options.precision)
        if ok and name == "torch" and torch_model is None:
            ok, reason = False, ("the torch runtime needs the PyTorch model: pass --reference RUN (the ONNX "
                                 "metadata names no checkpoint that exists)")
            if not plan.skip_unavailable:
                raise ToolkitError(reason)
        if ok:
            runnable.append(name)
        elif plan.skip_unavailable:
            state.skipped[name] = reason
        else:
            raise RuntimeUnavailableError(f"{name}: {reason}")
    return runnable


def _batch_sizes(requested: Sequence[int], info: OnnxInfo, state: _State) -> list[int]:
    sizes = sorted(set(int(b) for b in requested))
    if not sizes or not 1 <= sizes[0] <= sizes[-1] <= MAX_BATCH:
        raise UsageError(f"batch sizes must be 1..{MAX_BATCH} (the exported graphs' batch bound), got "
                         f"{list(requested)}")
    static = info.static_batch
    if static is not None and sizes != [static]:
        state.notes.append(f"the graph has a static batch of {static}: measuring only that (asked for {sizes})")
        return [static]
    return sizes


def _parity_inputs(info: OnnxInfo, plan: BenchPlan, state: _State) -> list[tuple[str, np.ndarray]]:
    sample_shape = info.inputs[0].shape[1:]
    if any(d is None for d in sample_shape):
        raise UsageError(f"input {info.inputs[0].name!r} {info.inputs[0].shape_str()}: only the batch dimension may "
                         "be dynamic")
    chunk = _chunk(info, plan)
    n = max(chunk, plan.parity_samples // chunk * chunk)
    sets = [("random", random_batch(sample_shape, n, plan.seed))]
    images, note = real_images(info.meta, sample_shape, plan.parity_images)
    state.notes.append(note)
    if images is not None and len(images) >= chunk:
        sets.append(("images", images[: len(images) // chunk * chunk]))
    return sets


def _chunk(info: OnnxInfo, plan: BenchPlan) -> int:
    return info.static_batch or max(1, plan.parity_batch)


def with_precision(plan: BenchPlan, precision: str | None) -> BenchPlan:
    """The plan with the runtimes' arithmetic set to ``precision`` (bf16), or the graph's own (None)."""
    return dataclasses.replace(plan, options=dataclasses.replace(plan.options, precision=precision))
