"""Serving settings measured by ``cli.py capacity`` (its capacity.json), applied to a Triton model's config: the
dynamic batcher's max batch, preferred sizes and queue delay, the instance count and the threads per instance."""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from core.errors import UsageError
from deploy.formats import CAPACITY_FORMAT, CAPACITY_FORMAT_VERSION
from deploy.triton.config import TritonConfig, TritonError

BACKEND_RUNTIME = {"onnxruntime": "onnxruntime", "openvino": "openvino", "tensorrt": "tensorrt"}


class CapacityFileError(UsageError):
    """A --capacity file that is not a capacity report of this format version."""


@dataclass(frozen=True)
class MeasuredConfig:
    """One runtime × precision's Server answer from a capacity report: the configuration it served with."""
    runtime: str
    precision: str
    max_batch: int
    preferred: tuple[int, ...]
    queue_delay_us: int
    executors: int
    threads: int
    mode: str                              # instances | streams (OpenVINO: one instance, one stream per executor)
    comment: str                           # names the measurement, for config.pbtxt


def load_capacity(path: str | os.PathLike) -> dict[str, Any]:
    """A capacity.json, checked to be one.

    Raises:
        CapacityFileError: unreadable, not JSON, or another format or version.
    """
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError) as e:
        raise CapacityFileError(f"--capacity {path}: not a readable JSON file ({e})") from None
    if not isinstance(data, dict) or (data.get("format"), data.get("format_version")) != (CAPACITY_FORMAT,
                                                                                       CAPACITY_FORMAT_VERSION):
        found = (data.get("format"), data.get("format_version")) if isinstance(data, dict) else type(data).__name__
        raise CapacityFileError(f"--capacity {path}: not a capacity report ({found}); expected "
                                f"{CAPACITY_FORMAT} v{CAPACITY_FORMAT_VERSION}, the capacity.json `cli.py capacity` "
                                "writes")
    return data


def measured_for(report: dict[str, Any], source: str, sha256: str, runtime: str,
                 precision: str) -> MeasuredConfig | None:
    """The Server answer of ``runtime`` computing in ``precision`` on the file with ``sha256``, or None."""
    for row in report.get("results", []):
        config = row.get("config") or {}
        if (row.get("runtime"), row.get("precision"), row.get("sha256")) != (runtime, precision, sha256) or \
                row.get("server_max_qps") is None or not row.get("valid") or not config:
            continue
        layout = f"{config['executors']} executor(s) x {config['threads']} thread(s)" + (
            " as OpenVINO streams" if config.get("mode") == "streams" else "")
        comment = (f"Batching and instances measured by alexnet-deploy capacity ({source}, {report.get('created')}): "
                   f"{runtime} {precision} served {row['server_max_qps']:g} QPS at p99 {row['server_p99_ms']:.1f} ms "
                   f"(SLO {report['slo_ms']:g} ms), LoadGen VALID ({row.get('loadgen_summary')}); max batch "
                   f"{config['max_batch']}, queue delay {config['queue_delay_us']} us, {layout}.")
        return MeasuredConfig(runtime, precision, int(config["max_batch"]),
                              tuple(config.get("preferred_batch_sizes") or ()), int(config["queue_delay_us"]),
                              int(config["executors"]), int(config["threads"]), config.get("mode", "instances"),
                              comment)
    return None


def apply_measured(config: TritonConfig, measured: MeasuredConfig) -> TritonConfig:
    """``config`` with the measured batching, instances and threads (and a comment naming the measurement).

    ONNX Runtime: one instance per executor, ``intra_op_thread_count`` threads each. OpenVINO: streams become one
    instance with ``NUM_STREAMS`` streams over all the threads (THROUGHPUT hint), separate executors one instance
    each (LATENCY hint). TensorRT: one GPU instance per executor.

    Raises:
        TritonError: a model without a batch dimension, or a measured max batch above the model's.
    """
    if config.max_batch_size == 0:
        raise TritonError(f"{config.name}: a static-batch model has no dynamic batcher to configure; the capacity "
                          "measurement needs a symbolic-batch export")
    if measured.max_batch > config.max_batch_size:
        raise TritonError(f"{config.name}: the measured max batch {measured.max_batch} exceeds the model's "
                          f"{config.max_batch_size}")
    streams = measured.mode == "streams"
    count = 1 if streams else measured.executors
    parameters = dict(config.parameters)
    kind = config.instance_kind
    if config.backend == "onnxruntime":
        parameters.update(intra_op_thread_count=str(measured.threads), inter_op_thread_count="1")
        kind = "KIND_CPU"
    elif config.backend == "openvino":
        parameters.update(PERFORMANCE_HINT="THROUGHPUT" if streams else "LATENCY",
                          NUM_STREAMS=str(measured.executors if streams else 1),
                          INFERENCE_NUM_THREADS=str(measured.threads * (measured.executors if streams else 1)))
    return replace(config, max_batch_size=measured.max_batch,
                   preferred_batch_sizes=measured.preferred or (measured.max_batch,),
                   max_queue_delay_us=measured.queue_delay_us, instance_count=count, instance_kind=kind,
                   parameters=tuple(parameters.items()), comments=config.comments + (measured.comment,))
