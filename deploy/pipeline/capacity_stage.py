"""The pipeline's capacity stage (``pipeline --slo-ms``): the Server QPS each benched runtime × precision sustains at
the SLO (deploy/serving/, MLPerf LoadGen) into OUT/capacity/, and a Triton repository for the pick, configured as
measured, into OUT/triton/."""
from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from core.errors import ToolkitError
from core.fileio import sha256_file
from deploy.pipeline.report import PipelineRecord
from runtimes.options import RuntimeOptions

if TYPE_CHECKING:
    from deploy.serving.plan import CapacityPlan

log = logging.getLogger(__name__)
CAPACITY_DIR, TRITON_DIR = "capacity", "triton"
SERVED = ("torch", "onnxruntime", "openvino")      # the runtimes deploy/serving runs executors for
TRITON_BACKENDS = ("onnxruntime", "openvino")      # the capacity picks a Triton repository can serve


def capacity_stage(plan: CapacityPlan, files: Sequence[Path], runtimes: Sequence[str], precisions: Sequence[str],
                   max_accuracy_drop: float, options: RuntimeOptions, record: PipelineRecord) -> None:
    """Measure capacity at ``plan.slo_ms`` on the exported ``files`` for the benched ``runtimes`` and record it;
    then the Triton repository of the recommendation. The plan's runtimes, precisions, budget and threads are the
    pipeline's. A failure is recorded (the report still comes); Ctrl-C propagates after the finished runs are
    written."""
    from deploy.serving.capacity import run_capacity

    served = tuple(r for r in runtimes if r in SERVED)
    if not served:
        record.notes.append(f"capacity skipped: none of {', '.join(runtimes)} has a serving loop here")
        return
    slo_ms = plan.slo_ms
    started = time.perf_counter()
    try:
        plan = dataclasses.replace(plan, runtimes=served, max_accuracy_drop=max_accuracy_drop,
                                   precisions=("auto", "bf16") if "bf16" in precisions else ("auto",),
                                   threads=options.threads, overwrite=True)
        report = run_capacity(files, plan, record.out / CAPACITY_DIR)
    except ToolkitError as e:
        record.failures.append(f"capacity at p99 <= {slo_ms:g} ms: {e}")
        return
    finally:
        record.timings_s["capacity"] = time.perf_counter() - started
    data = report.to_dict()
    record.capacity = {"slo_ms": data["slo_ms"], "file": f"{CAPACITY_DIR}/capacity.json",
                       "results": data["results"], "recommendation": data["recommendation"],
                       "recommendation_note": data.get("recommendation_note"), "loadgen": data.get("loadgen")}
    record.failures += [f"capacity: {f}" for f in report.failures]
    if report.interrupted:
        raise KeyboardInterrupt
    _triton(data, record)


def _triton(capacity: dict[str, Any], record: PipelineRecord) -> None:
    """OUT/triton/: the capacity pick's file with the batching and instances it was measured with."""
    from deploy.triton.config import TritonOptions
    from deploy.triton.measured import measured_for
    from deploy.triton.repository import write_triton_repository

    pick = capacity.get("recommendation")
    if not pick or pick["runtime"] not in TRITON_BACKENDS:
        record.notes.append("no Triton repository: " + ("no capacity pick" if not pick else
                                                       f"Triton has no backend for {pick['runtime']} here"))
        return
    model = Path(pick["model"])
    measured = measured_for(capacity, str(record.out / CAPACITY_DIR / "capacity.json"), sha256_file(model),
                            pick["runtime"], pick["precision"])
    openvino = pick["runtime"] == "openvino"
    try:
        result = write_triton_repository(model, record.out / TRITON_DIR,
                                         TritonOptions(openvino=openvino, bf16=pick["precision"] == "bf16",
                                                       overwrite=True),
                                         None, {pick["runtime"]: measured} if measured else None)
    except ToolkitError as e:
        record.failures.append(f"triton repository: {e}")
        return
    record.triton = {"repo": TRITON_DIR, "models": [m.config.name for m in result.models],
                     "measured": pick["runtime"], "notes": list(result.notes)}
