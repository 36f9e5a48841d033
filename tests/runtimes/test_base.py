"""The Runtime base class: lifecycle and input checks, on a NumPy-only fake adapter."""
from __future__ import annotations

import numpy as np
import pytest

from runtimes.base import Runtime
from core.contract import TensorSpec
from runtimes.errors import InputMismatchError, RuntimeStateError


class DoubleRuntime(Runtime):
    """y = 2x on (N, 3) float32 inputs; counts lifecycle calls."""
    name = "double"

    def __init__(self) -> None:
        super().__init__()
        self.loads = self.closes = 0

    def _load(self) -> None:
        self.loads += 1

    def _close(self) -> None:
        self.closes += 1

    def _input_specs(self):
        return [TensorSpec("x", (None, 3), "float32")]

    def _output_names(self):
        return ["y"]

    def _prepare(self, feeds):
        self._x = feeds["x"]

    def _run(self):
        self._y = self._x * 2

    def _fetch(self):
        return {"y": self._y}


def test_lifecycle_and_context_manager():
    rt = DoubleRuntime()
    with pytest.raises(RuntimeStateError, match="before load"):
        rt.infer({"x": np.zeros((1, 3), np.float32)})
    with rt as same:
        assert same is rt and rt.loaded
        rt.load()  # idempotent
        np.testing.assert_array_equal(rt.infer({"x": np.ones((2, 3), np.float32)})["y"], 2)
    assert (rt.loads, rt.closes) == (1, 1)
    rt.close()  # idempotent
    assert rt.closes == 1
    with pytest.raises(RuntimeStateError):
        rt.input_specs()


def test_run_before_prepare_raises():
    with DoubleRuntime() as rt, pytest.raises(RuntimeStateError, match="prepare"):
        rt.run()


def test_low_level_path_matches_infer():
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    with DoubleRuntime() as rt:
        rt.prepare({"x": x})
        rt.run()
        rt.synchronize()
        np.testing.assert_array_equal(rt.fetch()["y"], rt.infer({"x": x})["y"])


@pytest.mark.parametrize("feeds, match", [
    ({"z": np.zeros((1, 3), np.float32)}, r"unknown input\(s\) 'z'; missing input\(s\) 'x'; expected exactly: 'x'"),
    ({}, r"missing input\(s\) 'x'"),
    ({"x": np.zeros((1, 3), np.float64)}, r"dtype float64, expected float32"),
    ({"x": np.zeros((1, 4), np.float32)}, r"shape \(1, 4\), expected \(N, 3\)"),
    ({"x": np.zeros((3,), np.float32)}, r"shape \(3,\), expected \(N, 3\)"),
    ({"x": np.zeros((0, 3), np.float32)}, r"shape \(0, 3\)"),
    ({"x": [[1.0, 2.0, 3.0]]}, r"must be a numpy.ndarray, found list"),
    ([np.zeros((1, 3), np.float32)], r"feeds must be a mapping"),
])
def test_input_errors_say_expected_and_found(feeds, match):
    with DoubleRuntime() as rt, pytest.raises(InputMismatchError, match=match):
        rt.infer(feeds)


def test_names_are_checked_before_dtypes():
    with DoubleRuntime() as rt, pytest.raises(InputMismatchError, match="unknown input"):
        rt.infer({"x": np.zeros((1, 3), np.float64), "extra": np.zeros(1)})


def test_non_contiguous_feeds_are_made_contiguous():
    x = np.zeros((3, 2), np.float32).T
    with DoubleRuntime() as rt:
        assert rt.check_feeds({"x": x})["x"].flags.c_contiguous


def test_tensor_spec():
    spec = TensorSpec("input", (None, 3, 227, 227), "float32")
    assert spec.shape_str() == "(N, 3, 227, 227)"
    assert spec.accepts_shape((7, 3, 227, 227)) and not spec.accepts_shape((7, 3, 224, 224))
    assert spec.to_dict() == {"name": "input", "shape": [None, 3, 227, 227], "dtype": "float32"}
