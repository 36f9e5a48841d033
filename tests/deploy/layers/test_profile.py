"""Layer time from each runtime's own profiler on the small AlexNet, and runtimes without per-layer timing."""
from __future__ import annotations

import numpy as np
import pytest

from deploy.layers.capture import load_graph
from deploy.layers.profile import has_profiler, profile_layers
from export.layers import LAYERS
from runtimes.options import RuntimeOptions

X = np.random.default_rng(0).standard_normal((2, 3, 227, 227), dtype=np.float32)


def _wall_ms(runtime, feeds) -> float:
    """A plain timer for the tests (the CLI passes deploy/bench/timing.py's measure)."""
    import time

    runtime.infer(feeds)
    start = time.perf_counter()
    for _ in range(3):
        runtime.infer(feeds)
    return (time.perf_counter() - start) / 3 * 1e3


@pytest.mark.parametrize("runtime,form", [("onnxruntime", "int8-conv"), ("openvino", "fp32-native"),
                                          pytest.param("torch", "fp32-conv", marks=pytest.mark.slow)])
def test_every_layer_gets_the_profilers_time(small, runtime, form):
    graph = load_graph(small.file(form))
    profile = profile_layers(runtime, graph.info, graph.layer_map, small.torch_model, RuntimeOptions(), X, 2,
                             timer=_wall_ms, runs=2)
    assert profile.available and profile.reason == "" and not profile.unattributed, profile.to_dict()
    assert [t.layer for t in profile.layers] == list(LAYERS)
    assert all(t.ms > 0 and t.nodes >= 1 for t in profile.layers), profile.to_dict()
    assert sum(t.share for t in profile.layers) == pytest.approx(1.0)
    assert profile.measured_ms > 0 and profile.coverage is not None and profile.batch_size == 2
    if profile.profiler_total_ms is not None:  # the profiler's own total holds every node it timed
        assert profile.attributed_ms <= profile.profiler_total_ms * 1.0001
    convs = sum(t.ms for t in profile.layers if t.layer.startswith("conv"))
    assert convs > 0.4 * profile.attributed_ms  # with narrow fc layers, the convolutions are most of the work


def test_a_runtime_without_a_profiler_is_listed_as_such(small):
    """onnxruntime-cuda's node events would time kernel launches, not kernels: no made-up profile, nothing run."""
    graph = load_graph(small.file("fp32-conv"))
    calls: list = []
    for name in ("onnxruntime-cuda", "some-new-runtime"):
        ok, reason = has_profiler(name)
        assert not ok and reason
        profile = profile_layers(name, graph.info, graph.layer_map, small.torch_model, RuntimeOptions(), X, 2,
                                 timer=lambda rt, feeds: calls.append(rt) or 1.0)
        assert not profile.available and profile.reason == reason and profile.layers == () and not calls
        data = profile.to_dict()
        assert data["attributed_ms"] is None and data["coverage"] is None and data["measured_ms"] is None


def test_torch_on_a_gpu_has_no_cpu_span_profile(small):
    graph = load_graph(small.file("fp32-conv"))
    profile = profile_layers("torch", graph.info, graph.layer_map, small.torch_model, RuntimeOptions(device="cuda"),
                             X, 2)
    assert not profile.available and "GPU" in profile.reason


def test_without_a_timer_the_latency_is_not_made_up(small):
    graph = load_graph(small.file("fp32-native"))
    profile = profile_layers("onnxruntime", graph.info, graph.layer_map, small.torch_model, RuntimeOptions(), X, 1,
                             runs=1)
    assert profile.available and profile.measured_ms is None and profile.outside_ms is None
