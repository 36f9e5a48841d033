"""Each runtime's own profiler, read node by node: ONNX Runtime's session profiling JSON, OpenVINO's PERF_COUNT
profiling info, torch.profiler spans over AlexNet's modules, TensorRT's IProfiler. Each is the runtime's own adapter
with profiling switched on, so it runs what the bench runs."""
from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from deploy.layers.attribute import ProfiledNode
from runtimes.openvino_runtime import OpenVinoRuntime
from runtimes.ort_runtime import OrtRuntime
from runtimes.trt_runtime import TensorRTRuntime

log = logging.getLogger(__name__)
Collector = Callable[..., "tuple[list[ProfiledNode], float | None]"]


class _ProfiledOrt(OrtRuntime):
    """ONNX Runtime with session profiling on: node events (``cat: Node``, ``dur`` in µs) per run."""

    def session_options(self, ort):
        so = super().session_options(ort)
        self._trace_dir = tempfile.mkdtemp(prefix="alexnet-ort-profile-")
        so.enable_profiling = True
        so.profile_file_prefix = os.path.join(self._trace_dir, "ort")
        return so

    def trace(self) -> list[dict]:
        path = Path(self._session.end_profiling())
        try:
            return json.loads(path.read_text())
        finally:
            path.unlink(missing_ok=True)
            with contextlib.suppress(OSError):
                os.rmdir(self._trace_dir)


def ort_nodes(model_path: Path, options: Any, feeds: dict[str, np.ndarray], warmup: int,
              runs: int) -> tuple[list[ProfiledNode], float | None]:
    """Mean time per node over ``runs`` profiled runs after ``warmup``, in execution order, and the mean run."""
    rt = _ProfiledOrt.create(model_path, options)
    with rt:
        for _ in range(warmup + runs):
            rt.infer(feeds)
        trace = rt.trace()
    return ort_trace_nodes(trace, warmup)


def ort_trace_nodes(trace: list[dict], skip_runs: int) -> tuple[list[ProfiledNode], float | None]:
    """Node times from an ONNX Runtime trace: the runs after the first ``skip_runs``, averaged."""
    spans = sorted((e["ts"], e["ts"] + e["dur"]) for e in trace
                   if e.get("cat") == "Session" and e.get("name") == "model_run")[skip_runs:]
    if not spans:
        return [], None
    sums: dict[str, list] = {}
    for e in trace:
        name = e.get("name", "")
        if e.get("cat") != "Node" or not name.endswith("_kernel_time"):
            continue
        if any(start <= e["ts"] <= end for start, end in spans):
            entry = sums.setdefault(name[:-len("_kernel_time")], [e.get("args", {}).get("op_name", ""), 0.0, e["ts"]])
            entry[1] += e["dur"] / 1e3
    ordered = sorted(sums.items(), key=lambda item: item[1][2])
    nodes = [ProfiledNode(name, op, ms / len(spans)) for name, (op, ms, _) in ordered]
    return nodes, float(np.mean([(end - start) / 1e3 for start, end in spans]))


class _ProfiledOpenVino(OpenVinoRuntime):
    """OpenVINO compiled with ``PERF_COUNT`` (its own compiled models only: the process's Core is left alone)."""

    compile_config = {"PERF_COUNT": True}

    def profiling_info(self) -> list:
        return self._request.get_profiling_info()


def openvino_nodes(model_path: Path, options: Any, feeds: dict[str, np.ndarray], warmup: int,
                   runs: int) -> tuple[list[ProfiledNode], float | None]:
    """Mean ``real_time`` of every executed node over ``runs`` runs (the profiling info of each last run)."""
    batch = next(iter(feeds.values())).shape[0]
    rt = _ProfiledOpenVino.create(model_path, options, (batch,))
    sums: dict[str, list] = {}
    with rt:
        for index in range(warmup + runs):
            rt.infer(feeds)
            if index < warmup:
                continue
            for info in rt.profiling_info():
                if str(info.status).endswith(".EXECUTED"):  # NOT_RUN: fused into a neighbour, no time of its own
                    entry = sums.setdefault(info.node_name, [info.node_type, 0.0])
                    entry[1] += info.real_time.total_seconds() * 1e3
    nodes = [ProfiledNode(name, op, ms / runs) for name, (op, ms) in sums.items()]
    return nodes, sum(n.ms for n in nodes) if nodes else None


def torch_nodes(build: Callable[[], Any], make: Callable[[Any], Any], feeds: dict[str, np.ndarray], warmup: int,
                runs: int) -> tuple[list[ProfiledNode], float | None]:
    """torch.profiler spans ``layer:<name>``, from the first module of each layer to its output module
    (export.layers.TORCH_FIRST / TORCH_OUTPUT), while the torch runtime runs the model; the mean per run."""
    from torch.profiler import ProfilerActivity, profile, record_function

    from export.layers import LAYERS, TORCH_FIRST, TORCH_OUTPUT

    model = build()
    modules = dict(model.named_modules())
    open_spans: dict[str, Any] = {}

    def enter(layer: str):
        def pre(module, args):
            open_spans[layer] = record_function(f"layer:{layer}")
            open_spans[layer].__enter__()
        return pre

    def leave(layer: str):
        def post(module, args, output):
            open_spans.pop(layer).__exit__(None, None, None)
        return post

    handles = [h for layer in LAYERS for h in (modules[TORCH_FIRST[layer]].register_forward_pre_hook(enter(layer)),
                                               modules[TORCH_OUTPUT[layer]].register_forward_hook(leave(layer)))]
    try:
        with make(model) as rt:
            for _ in range(warmup):
                rt.infer(feeds)
            with _quiet_fd2(), profile(activities=[ProfilerActivity.CPU]) as prof:
                for _ in range(runs):
                    rt.infer(feeds)
    finally:
        for handle in handles:
            handle.remove()
    sums: dict[str, float] = {}
    for event in prof.events():
        if event.name.startswith("layer:"):
            sums[event.name[6:]] = sums.get(event.name[6:], 0.0) + event.cpu_time_total / 1e3
    return [ProfiledNode(layer, "", sums.get(layer, 0.0) / runs) for layer in LAYERS], None


@contextlib.contextmanager
def _quiet_fd2() -> Iterator[None]:
    """Kineto writes start/stop notes (and a CUDA probe error on GPU-less hosts) straight to file descriptor 2;
    keep them out of the terminal and log them at debug level."""
    with tempfile.TemporaryFile() as sink:
        saved = os.dup(2)
        os.dup2(sink.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            for line in sink.read().decode(errors="replace").splitlines():
                log.debug("torch.profiler: %s", line)


class _ProfiledTensorRT(TensorRTRuntime):
    """TensorRT with an ``IProfiler`` on the execution context: ``report_layer_time`` per layer per run."""

    def attach(self, profiler: Any) -> None:
        self._ctx.profiler = profiler


def _recorder():
    import tensorrt as trt

    class Recorder(trt.IProfiler):
        def __init__(self) -> None:
            trt.IProfiler.__init__(self)
            self.times: list[tuple[str, float]] = []

        def report_layer_time(self, layer_name: str, ms: float) -> None:
            self.times.append((layer_name, ms))

    return Recorder()


def tensorrt_nodes(model_path: Path, options: Any, feeds: dict[str, np.ndarray], warmup: int,
                   runs: int) -> tuple[list[ProfiledNode], float | None]:
    """Mean time per engine layer over ``runs`` runs; a reformat layer counts as a layout conversion."""
    batch = next(iter(feeds.values())).shape[0]
    rt = _ProfiledTensorRT.create(model_path, options, (batch,))
    with rt:
        for _ in range(warmup):
            rt.infer(feeds)
        rt.prepare(feeds)
        recorder = _recorder()
        rt.attach(recorder)
        for _ in range(runs):
            rt.run()
            rt.synchronize()
    sums: dict[str, float] = {}
    for name, ms in recorder.times:
        sums[name] = sums.get(name, 0.0) + ms
    nodes = [ProfiledNode(name, "Reformat" if "Reformatting" in name else "", ms / runs) for name, ms in sums.items()]
    return nodes, sum(n.ms for n in nodes) if nodes else None
