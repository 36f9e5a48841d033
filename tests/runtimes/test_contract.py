"""The runtime contract, run against every registered adapter that is available here (others skip with the reason)."""
from __future__ import annotations

import numpy as np
import pytest

from runtimes.parity import compare_outputs
from export.spec import tolerance_for
from runtimes.errors import InputMismatchError, RuntimeStateError
from runtimes.registry import RUNTIME_NAMES, availability, runtime_class
from runtimes.torch_runtime import TorchRuntime

PARAMS = [
    pytest.param("torch"),
    pytest.param("onnxruntime"),
    pytest.param("onnxruntime-cuda", marks=pytest.mark.gpu),
    pytest.param("tensorrt", marks=[pytest.mark.gpu, pytest.mark.tensorrt]),
    pytest.param("openvino"),
]


def test_every_registered_runtime_is_covered():
    assert [p.values[0] for p in PARAMS] == list(RUNTIME_NAMES)


def make(name: str, tiny, tmp_path):
    ok, reason = availability(name)
    if not ok:
        pytest.skip(f"{name} unavailable: {reason}")
    cls = runtime_class(name)
    if name == "torch":
        return cls(tiny.case.build(), device="auto", input_shape=tiny.case.input_shape)
    if name == "tensorrt":  # a tiny engine per test: cheap, and each test starts from a cold cache on purpose
        return cls(tiny.path, cache_dir=tmp_path / "engines", batch_sizes=(1, 4), max_batch=8, optimization_level=1)
    return cls(tiny.path)


@pytest.fixture(params=PARAMS)
def runtime(request, tiny_onnx, tmp_path):
    rt = make(request.param, tiny_onnx, tmp_path)
    yield rt
    rt.close()


def test_class_attributes_and_availability(runtime):
    assert runtime.name in RUNTIME_NAMES
    ok, reason = type(runtime).is_available()
    assert ok and reason == ""


def test_lifecycle(runtime, tiny_onnx):
    x = tiny_onnx.case.sample(2)
    with pytest.raises(RuntimeStateError, match="load"):
        runtime.infer({"input": x})
    runtime.load()
    runtime.load()  # idempotent
    [spec] = runtime.input_specs()
    assert (spec.name, spec.shape, spec.dtype) == ("input", (None, 3, 16, 16), "float32")
    assert runtime.output_names() == ["logits"]
    out = runtime.infer({"input": x})
    assert list(out) == ["logits"] and isinstance(out["logits"], np.ndarray)
    tiny_onnx.case.check(out["logits"], 2)
    runtime.close()
    runtime.close()  # idempotent
    with pytest.raises(RuntimeStateError):
        runtime.infer({"input": x})
    with runtime:  # a closed runtime loads again
        tiny_onnx.case.check(runtime.infer({"input": tiny_onnx.case.sample(3)})["logits"], 3)


def test_outputs_are_caller_owned(runtime, tiny_onnx):
    with runtime:
        first = runtime.infer({"input": tiny_onnx.case.sample(2, seed=1)})["logits"]
        kept = first.copy()
        runtime.infer({"input": tiny_onnx.case.sample(2, seed=2)})
        np.testing.assert_array_equal(first, kept)


@pytest.mark.parametrize("feeds, match", [
    (lambda x: {"images": x}, r"unknown input\(s\) 'images'.*expected exactly: 'input' \(N, 3, 16, 16\) float32"),
    (lambda x: {"input": x.astype(np.float64)}, r"dtype float64, expected float32"),
    (lambda x: {"input": x[:, :, :8]}, r"shape \(2, 3, 8, 16\), expected \(N, 3, 16, 16\)"),
    (lambda x: {"input": x[0]}, r"shape \(3, 16, 16\), expected \(N, 3, 16, 16\)"),
])
def test_wrong_inputs_raise_clear_errors(runtime, tiny_onnx, feeds, match):
    with runtime, pytest.raises(InputMismatchError, match=match):
        runtime.infer(feeds(tiny_onnx.case.sample(2)))


def test_parity_with_torch(runtime, tiny_onnx):
    x = tiny_onnx.case.sample(4, seed=3)
    with TorchRuntime(tiny_onnx.case.build(), input_shape=tiny_onnx.case.input_shape) as ref, runtime:
        report = compare_outputs(ref.infer({"input": x}), runtime.infer({"input": x}), tolerance_for("fp32"),
                                 reference_name="torch", candidate_name=runtime.name)
    assert report.passed, str(report)


def test_prepared_path_matches_infer(runtime, tiny_onnx):
    x = tiny_onnx.case.sample(4, seed=4)
    with runtime:
        expected = runtime.infer({"input": x})["logits"]
        runtime.prepare({"input": x})
        for _ in range(3):
            runtime.run()
        runtime.synchronize()
        np.testing.assert_allclose(runtime.fetch()["logits"], expected, rtol=1e-6, atol=1e-6)
        assert (runtime.stream is None) == (runtime.device == "cpu")


def test_describe_is_json_ready(runtime):
    import json

    with runtime:
        info = runtime.describe()
    assert info["runtime"] == runtime.name and info["device"] in ("cpu", "cuda")
    json.dumps(info)
