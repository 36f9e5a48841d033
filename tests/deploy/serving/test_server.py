"""The serving loop on real runtime adapters: each request gets its own answer, a failing request fails alone, the
executors split the cores, and shutdown answers everything; OpenVINO's streams through its async queue."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from core.onnx_file import read_onnx_info
from deploy.models import TorchModel
from deploy.serving.batcher import BatchPolicy, ServerClosed
from deploy.serving.executors import Executors, Layout, ServingTarget, layouts
from deploy.serving.server import Server
from runtimes.errors import InputMismatchError
from tests.helpers import make_pooling_classifier

CLASSES = ["a", "b", "c", "d"]
POISON = 777.0  # a sample whose first value is this makes the model below raise


class PoisonedPool(nn.Module):
    """Mean colour → linear scores, like the pooling classifier, but raising on a poisoned sample."""

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.arange(12, dtype=torch.float32).reshape(3, 4) / 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if bool((x[:, 0, 0, 0] == POISON).any()):
            raise ValueError("poisoned sample")
        return x.mean(dim=(2, 3)) @ self.w


@pytest.fixture(scope="module")
def pooling(tmp_path_factory):
    path = make_pooling_classifier(tmp_path_factory.mktemp("serving") / "m.onnx", CLASSES)
    return path, read_onnx_info(path)


def samples(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, 3, 227, 227), dtype=np.float32)


def expected(x: np.ndarray) -> np.ndarray:
    return x.mean(axis=(2, 3)) @ (np.arange(12, dtype=np.float32).reshape(3, 4) / 10)


def torch_target(pooling) -> ServingTarget:
    path, info = pooling
    return ServingTarget("torch", path, info, TorchModel(None, "test model", PoisonedPool))


@pytest.mark.parametrize("layout", [Layout(1, 1), Layout(2, 1)])
def test_every_request_gets_its_own_row(pooling, layout):
    x = samples(24)
    executors = Executors(torch_target(pooling), layout, max_batch=8)
    try:
        with Server(executors, BatchPolicy(max_batch=8, queue_delay_us=2000)) as server:
            futures = [server.request(x[i], key=i) for i in range(len(x))]
            rows = np.stack([f.result(timeout=30) for f in futures])
        np.testing.assert_allclose(rows, expected(x), rtol=1e-4, atol=1e-5)
        stats = server.stats.to_dict()
        assert stats["completed"] == 24 and stats["failed"] == 0 and stats["mean_batch"] > 1  # batched, not 1 by 1
    finally:
        executors.close()


def test_a_failing_request_fails_alone_and_a_misshapen_one_is_refused(pooling):
    x = samples(8, seed=1)
    x[3, 0, 0, 0] = POISON
    executors = Executors(torch_target(pooling), Layout(1, 1), max_batch=8)
    try:
        with Server(executors, BatchPolicy(max_batch=8, queue_delay_us=200_000)) as server:
            futures = [server.request(x[i], key=i) for i in range(8)]  # one batch of 8: it fails, then is split
            wrong = server.request(np.zeros((3, 4, 4), np.float32))
            for i, future in enumerate(futures):
                if i == 3:
                    with pytest.raises(ValueError, match="poisoned"):
                        future.result(timeout=30)
                else:
                    np.testing.assert_allclose(future.result(timeout=30), expected(x[i:i + 1])[0], rtol=1e-4,
                                               atol=1e-5)
            with pytest.raises(InputMismatchError, match=r"expected \(3, 227, 227\)"):
                wrong.result(timeout=5)
        stats = server.stats.to_dict()
        assert (stats["completed"], stats["failed"]) == (7, 2)
    finally:
        executors.close()


def test_close_answers_what_is_queued_and_refuses_later_requests(pooling):
    x = samples(6, seed=2)
    executors = Executors(torch_target(pooling), Layout(1, 1), max_batch=4)
    try:
        server = Server(executors, BatchPolicy(max_batch=4, queue_delay_us=5_000_000))
        drained = [server.request(x[i]) for i in range(3)]
        server.close(drain=True)  # the 5 s delay is not waited for: closing flushes the queue
        assert all(f.result(timeout=5).shape == (4,) for f in drained)
        with pytest.raises(ServerClosed):
            server.request(x[0]).result(timeout=5)
        cancelled_server = Server(executors, BatchPolicy(max_batch=4, queue_delay_us=5_000_000))
        cancelled = [cancelled_server.request(x[i]) for i in range(3)]
        cancelled_server.close(drain=False)
        for future in cancelled:
            with pytest.raises(ServerClosed):
                future.result(timeout=5)
        assert not any(t.is_alive() for t in server._threads + cancelled_server._threads)
    finally:
        executors.close()


def test_layouts_split_the_cores_evenly():
    assert [(lay.executors, lay.threads, lay.mode) for lay in layouts("openvino", 4)] == [
        (1, 4, "instances"), (2, 2, "instances"), (2, 2, "streams"), (4, 1, "instances"), (4, 1, "streams")]
    assert all(lay.executors * lay.threads == 6 for lay in layouts("onnxruntime", 6))


@pytest.mark.parametrize("runtime,layout", [("onnxruntime", Layout(2, 1)), ("openvino", Layout(2, 1, "streams")),
                                            ("openvino", Layout(1, 2))])
def test_onnx_runtimes_serve_the_file(pooling, runtime, layout):
    pytest.importorskip("openvino" if runtime == "openvino" else "onnxruntime")
    path, info = pooling
    x = samples(10, seed=3)
    executors = Executors(ServingTarget(runtime, path, info), layout, max_batch=4)
    try:
        with Server(executors, BatchPolicy(max_batch=4)) as server:
            rows = np.stack([f.result(timeout=30) for f in [server.request(x[i]) for i in range(10)]])
        np.testing.assert_allclose(rows, expected(x), rtol=1e-3, atol=1e-4)
        if runtime == "openvino":
            compiled = executors.describe()["openvino"]
            assert compiled["streams"] == layout.executors // (1 if layout.mode == "streams" else layout.executors)
    finally:
        executors.close()
