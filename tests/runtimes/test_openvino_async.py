"""OpenVinoRuntime.async_queue: a dynamic-batch model with one or more streams, answering through its callback the
same logits as a synchronous call; misuse is refused."""
from __future__ import annotations

import threading

import numpy as np
import pytest

from runtimes.errors import InputMismatchError, RuntimeOptionError, RuntimeStateError
from tests.helpers import make_pooling_classifier

ov = pytest.importorskip("openvino")
from runtimes.openvino_runtime import OpenVinoRuntime  # noqa: E402  (needs openvino)


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return make_pooling_classifier(tmp_path_factory.mktemp("ov-async") / "m.onnx", ["a", "b", "c"])


@pytest.mark.parametrize("streams", [1, 2])
def test_batches_of_every_size_give_the_synchronous_logits(model, streams):
    x = np.random.default_rng(0).standard_normal((6, 3, 227, 227), dtype=np.float32)
    got: dict[int, np.ndarray] = {}
    lock = threading.Lock()

    def done(userdata, outputs):
        with lock:
            got[userdata] = outputs["logits"]

    with OpenVinoRuntime(model, threads=2) as rt:
        queue = rt.async_queue(max_batch=4, streams=streams, callback=done)
        for size in (1, 2, 3, 4):
            queue.wait_idle()
            queue.start(x[:size], size)
        queue.wait_all()
        for size in (1, 2, 3, 4):
            np.testing.assert_allclose(got[size], rt.infer({"input": x[:size]})["logits"], rtol=1e-5, atol=1e-6)
        info = queue.describe()
        assert info["streams"] == streams and info["jobs"] == streams and info["max_batch"] == 4
        assert info["performance_hint"] == ("THROUGHPUT" if streams > 1 else "LATENCY")


def test_misuse_is_refused(model):
    rt = OpenVinoRuntime(model, threads=2)
    with pytest.raises(RuntimeStateError, match="before load"):
        rt.async_queue(4)
    with rt:
        with pytest.raises(RuntimeOptionError, match="streams 3"):
            rt.async_queue(4, streams=3)  # more streams than threads
        queue = rt.async_queue(4)
        for bad in (np.zeros((5, 3, 227, 227), np.float32), np.zeros((1, 3, 9, 9), np.float32),
                    np.zeros((1, 3, 227, 227), np.float64)):
            with pytest.raises(InputMismatchError, match=r"expected one input of \(1..4, 3, 227, 227\)"):
                queue.start(bad)
