"""int8 calibration by measurement: each method's activation ranges, and how many images it took for them to settle.

Ranges come from onnxruntime.quantization's own statistics (its HistogramCollector for entropy and percentile; the
running absolute maximum for MinMax, what its MinMaxCalibrater computes with symmetric ranges), collected in one pass
of the fp32 graph over the calibration images. The image count is measured, not a constant: after 16, 32, 64, ...
images every method's ranges are compared with the previous count's, and a method is settled once its largest
relative change stayed within ``TOLERANCE`` for two doublings in a row; it keeps the ranges of that count. A method
that never settles uses every image up to the cap (MinMax can keep growing with every outlier).
"""
from __future__ import annotations

import contextlib
import io
import logging
from dataclasses import dataclass, field
from typing import Callable, Iterable

import numpy as np
import onnx
from onnx import TensorProto, helper

from export.errors import ExportError

log = logging.getLogger(__name__)

METHODS = ("minmax", "entropy", "percentile")
# A range "stopped moving" when no tensor's moved by more than 5 % since the previous count: entropy's threshold moves
# in whole bins of its 128-bin histogram (1.6 % of the range each), and a 5 % change of a scale moves every int8 step
# by 5 % of a step, far below the rounding itself.
TOLERANCE = 0.05
FIRST_CHECK = 16        # the first count compared; then every doubling
# onnxruntime.quantization's defaults for its EntropyCalibrater and PercentileCalibrater.
ENTROPY_BINS, ENTROPY_QUANTIZED_BINS = 128, 128
PERCENTILE_BINS, PERCENTILE = 2048, 99.999


@dataclass(frozen=True)
class Calibration:
    """Per method: the range of every calibrated tensor, the images it used and whether it settled."""
    ranges: dict[str, dict[str, float]]
    images: dict[str, int]
    settled: dict[str, bool]
    trace: tuple[dict, ...] = ()   # per count: {"images": n, "moved": {method: largest relative change}}
    available: int = 0             # images that were there to use (the cap)
    seconds: float = 0.0
    notes: tuple[str, ...] = field(default_factory=tuple)

    def to_dict(self) -> dict:
        return {"images": self.images, "settled": self.settled, "tolerance": TOLERANCE, "available": self.available,
                "trace": list(self.trace), "seconds": round(self.seconds, 2)}


class _Method:
    """One method's running statistics and the ranges it settled on."""

    def __init__(self, name: str) -> None:
        from onnxruntime.quantization.calibrate import HistogramCollector

        self.name, self.amax = name, {}
        kind = _uniform_percentile_class() if name == "percentile" else HistogramCollector
        self.collector = None if name == "minmax" else kind(
            method=name, symmetric=True, num_bins=ENTROPY_BINS if name == "entropy" else PERCENTILE_BINS,
            num_quantized_bins=ENTROPY_QUANTIZED_BINS, percentile=PERCENTILE, scenario="same")
        self.previous: dict[str, float] | None = None
        self.calm = 0              # consecutive doublings within the tolerance
        self.final: dict[str, float] | None = None
        self.images = 0

    def collect(self, arrays: dict[str, np.ndarray]) -> None:
        if self.collector is None:
            for name, array in arrays.items():
                self.amax[name] = max(self.amax.get(name, 0.0), float(np.abs(array).max()))
        else:
            with contextlib.redirect_stdout(io.StringIO()):  # the collector prints its progress
                self.collector.collect(arrays)

    def ranges(self) -> dict[str, float]:
        if self.collector is None:
            return dict(self.amax)
        with contextlib.redirect_stdout(io.StringIO()):
            found = self.collector.compute_collection_result()
        return {name: float(max(abs(float(v[0])), abs(float(v[1])))) for name, v in found.items()}

    def check(self, images: int, settle: bool = True) -> float | None:
        """Compare with the previous count; settle after two calm doublings. Returns the largest change."""
        current = self.ranges()
        moved = None if self.previous is None else max(
            abs(current[t] / self.previous[t] - 1) if self.previous[t] > 0 else float(current[t] > 0)
            for t in current)
        self.calm = self.calm + 1 if moved is not None and moved <= TOLERANCE else 0
        self.previous = current
        if self.calm >= 2 and settle:
            self.final, self.images = current, images
        return moved


def _uniform_percentile_class():
    from onnxruntime.quantization.calibrate import HistogramCollector

    class UniformPercentile(HistogramCollector):
        """ORT's percentile histogram of |x| with the same uniform bins, counted with numpy's uniform-bin path: ORT
        passes the grown edges as an array, which makes numpy sort every batch (8.8 of 21 s over 256 images)."""

        def collect_absolute_value(self, name_to_arr):
            for tensor, array in name_to_arr.items():
                array = np.abs(np.asarray(array, np.float32).ravel())
                low, high = np.nanmin(array) if array.size else 0, np.nanmax(array) if array.size else 0
                if tensor not in self.histogram_dict:
                    hist, edges = np.histogram(array, bins=self.num_bins)
                    self.histogram_dict[tensor] = (hist, edges.astype(np.float32), np.float32(low), np.float32(high))
                    continue
                old_hist, edges, old_low, old_high = self.histogram_dict[tensor]
                width = edges[1] - edges[0]
                if high > edges[-1]:  # grow by whole bins of the same width, as ORT does
                    extra = int(np.ceil((high - edges[-1]) / width))
                    edges = edges[0] + width * np.arange(len(edges) + extra, dtype=np.float64)
                hist, _ = np.histogram(array, bins=len(edges) - 1, range=(float(edges[0]), float(edges[-1])))
                hist[:len(old_hist)] += old_hist
                self.histogram_dict[tensor] = (hist, edges.astype(np.float32), min(old_low, np.float32(low)),
                                               max(old_high, np.float32(high)))

    return UniformPercentile


def calibrate(model: onnx.ModelProto, tensors: list[str], batches: Iterable[np.ndarray], *, input_name: str,
              methods: tuple[str, ...] = METHODS, settle: bool = True,
              progress: Callable[[str], None] | None = None) -> Calibration:
    """Run the fp32 ``model`` over ``batches`` (preprocessed calibration images) and measure every method's ranges
    for ``tensors`` until each settles (``settle=False``: over every batch) or the images run out.

    Raises:
        ExportError: an unknown method, or no image at all.
    """
    import time

    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise ExportError(f"unknown calibration method {', '.join(unknown)}; expected {', '.join(METHODS)}")
    start = time.perf_counter()
    run = _probe(model, tensors, input_name)
    states = {m: _Method(m) for m in methods}
    seen, check, trace = 0, FIRST_CHECK, []
    for batch in batches:
        arrays = run(batch)
        for state in states.values():
            if state.final is None:
                state.collect(arrays)
        seen += len(batch)
        if seen >= check:
            trace.append({"images": seen, "moved": _check(states, seen, settle)})
            check *= 2
            if progress:
                progress(f"calibration: {seen} images, ranges moved "
                         + ", ".join(f"{m} {v:.1%}" for m, v in trace[-1]["moved"].items() if v is not None))
            if all(s.final is not None for s in states.values()):
                break
    if seen == 0:
        raise ExportError("int8 calibration got no images")
    if not trace or trace[-1]["images"] != seen:
        trace.append({"images": seen, "moved": _check(states, seen, settle)})
    for state in states.values():
        if state.final is None:
            state.final, state.images = state.previous, seen
    return Calibration({m: s.final for m, s in states.items()}, {m: s.images for m, s in states.items()},
                       {m: s.calm >= 2 for m, s in states.items()}, tuple(trace), seen,
                       time.perf_counter() - start)


def _check(states: dict[str, _Method], images: int, settle: bool = True) -> dict[str, float | None]:
    moved = {}
    for name, state in states.items():
        if state.final is None:
            change = state.check(images, settle)
            moved[name] = None if change is None else round(change, 4)
    return moved


def _probe(model: onnx.ModelProto, tensors: list[str], input_name: str) -> Callable[[np.ndarray], dict]:
    """A session of ``model`` that also returns ``tensors`` (the graph input is passed through)."""
    import onnxruntime as ort

    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    del probe.graph.output[:]
    marked = [t for t in tensors if t != input_name]
    probe.graph.output.extend(helper.make_tensor_value_info(t, TensorProto.FLOAT, None) for t in marked)
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(probe.SerializeToString(), options, providers=["CPUExecutionProvider"])

    def run(batch: np.ndarray) -> dict[str, np.ndarray]:
        batch = np.ascontiguousarray(batch, dtype=np.float32)
        out = dict(zip(marked, session.run(marked, {input_name: batch})))
        if input_name in tensors:
            out[input_name] = batch
        return out

    return run
