"""Accuracy-aware int8: calibration methods measured on held-out images, then the fewest layers kept in fp32 that meet
the accuracy budget, chosen by each layer's measured sensitivity.

1. Calibrate (export/calibration.py): every method's ranges, each on as many images as it needed to settle.
2. Quantize every planned layer (export/qdq.py) with each method's ranges and measure the task accuracy on the
   validation images (never the calibration images) with ONNX Runtime, against PyTorch fp32 on the same images.
3. If the best method misses the budget: quantize each layer alone and measure how far its logits move (the
   sensitivity); keep layers in fp32, most sensitive first, until the budget holds; then put back into int8 every kept
   layer the budget does not need (least sensitive first), so no single kept layer is superfluous.
4. Nothing meets it: :class:`Int8BudgetError` with the best drop reached and the layers it kept.
"""
from __future__ import annotations

import logging
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import onnx

from export.calibration import METHODS, Calibration, calibrate
from export.errors import ExportError
from export.evaluate import Comparison, compare, onnx_logits, torch_logits
from export.images import CalibrationSet, ImageSet
from export.qdq import Quantizer, plan_int8
from runtimes.parity import Tolerance, compare_outputs

log = logging.getLogger(__name__)
CALIBRATION_BATCH = 16


class Int8BudgetError(ExportError):
    """No int8 graph met the accuracy budget; the message names the best drop reached and the layers it kept."""


@dataclass(frozen=True)
class SearchConfig:
    methods: tuple[str, ...] = METHODS
    budget_points: float | None = None  # None: no validation images, nothing can be judged
    tolerance: Tolerance | None = None  # the exporter's image parity gate (top-1 agreement, worst cosine), also met
    random_inputs: np.ndarray | None = None   # the exporter's fixed-seed random inputs and their gate, also met
    random_tolerance: Tolerance | None = None
    batch: int | None = None            # a static batch (the graph's)
    input_name: str = "input"
    output_name: str = "logits"


@dataclass(frozen=True)
class Candidate:
    """One int8 graph that was measured: its calibration method and the layers it left in fp32."""
    method: str
    kept: tuple[str, ...]
    comparison: Comparison | None
    img_s: float | None          # ONNX Runtime while measuring accuracy (batch 32): a rough figure
    step: str                    # "method", "sensitivity" (only one layer int8), "fallback" or "prune"
    parity: bool = True          # passed the exporter's image parity gate as well (agreement, worst cosine)

    @property
    def label(self) -> str:
        return self.method + (f", fp32: {', '.join(self.kept)}" if self.kept else "")

    def meets(self, budget: float | None) -> bool:
        return budget is None or (self.parity and self.comparison is not None
                                  and self.comparison.drop_points <= budget + 1e-9)

    def to_dict(self) -> dict:
        return {"method": self.method, "kept_fp32": list(self.kept), "step": self.step, "parity_passed": self.parity,
                "onnxruntime_img_s": None if self.img_s is None else round(self.img_s, 1),
                **(self.comparison.to_dict() if self.comparison else {})}


@dataclass(frozen=True)
class Int8Choice:
    """What the search chose and everything it measured on the way (the export report's ``quantization``)."""
    method: str
    kept: tuple[str, ...]                 # layers left in fp32 beyond the form's fixed ones
    int8_layers: tuple[str, ...]
    form: str
    budget_points: float | None
    comparison: Comparison | None
    calibration: Calibration
    candidates: tuple[Candidate, ...]
    sensitivity: dict[str, dict] = field(default_factory=dict)
    seconds: float = 0.0

    def to_dict(self) -> dict:
        return {"method": self.method, "kept_fp32": list(self.kept), "int8_layers": list(self.int8_layers),
                "lrn": self.form, "max_accuracy_drop_points": self.budget_points,
                "result": self.comparison.to_dict() if self.comparison else None,
                "calibration": self.calibration.to_dict(), "sensitivity": self.sensitivity,
                "candidates": [c.to_dict() for c in self.candidates], "seconds": round(self.seconds, 1)}


class _Evaluator:
    """Measures int8 graphs on the validation images with the adapter the exporter's parity check uses."""

    def __init__(self, quantizer: Quantizer, calibration: Calibration, images: ImageSet | None,
                 reference: np.ndarray | None, config: SearchConfig, folder: Path, torch_model=None) -> None:
        self.quantizer, self.calibration, self.images, self.reference = quantizer, calibration, images, reference
        self.config, self.folder, self.done = config, folder, []
        self.random = None
        if config.random_inputs is not None and config.random_tolerance is not None:
            self.random = ImageSet(config.random_inputs, None, "random")
            self.random_reference = torch_logits(torch_model, self.random)

    def build(self, method: str, kept=()) -> onnx.ModelProto:
        layers = [name for name in self.quantizer.plan.names if name not in kept]
        return self.quantizer.build(self.calibration.ranges[method], layers)

    def measure(self, method: str, kept=(), step: str = "method", only: str | None = None) -> Candidate:
        """Top-1 and logit error of ``method`` with ``kept`` in fp32 (or with ``only`` that layer in int8)."""
        from runtimes.ort_runtime import OrtRuntime

        layers = [only] if only else [n for n in self.quantizer.plan.names if n not in kept]
        path = self.folder / "candidate.onnx"
        onnx.save(self.quantizer.build(self.calibration.ranges[method], layers), os.fspath(path))
        names = (self.config.input_name, self.config.output_name, self.config.batch)
        with OrtRuntime(path, precision="int8") as runtime:
            logits, speed = onnx_logits(runtime, self.images, *names)
            noise = onnx_logits(runtime, self.random, *names)[0] if self.random is not None else None
        shown = tuple(n for n in self.quantizer.plan.names if n != only) if only else tuple(kept)
        out = self.config.output_name
        parity = self.config.tolerance is None or compare_outputs(
            {out: self.reference}, {out: logits}, self.config.tolerance, inputs="images").passed
        if noise is not None:
            parity = parity and compare_outputs({out: self.random_reference}, {out: noise},
                                                self.config.random_tolerance, inputs="random").passed
        candidate = Candidate(method, shown, compare(self.reference, logits, self.images.labels), speed, step,
                              parity)
        if step != "sensitivity":
            self.done.append(candidate)
        return candidate


def search_int8(model: onnx.ModelProto, torch_model, calibration_set: CalibrationSet, images: ImageSet | None,
                config: SearchConfig, progress: Callable[[str], None] | None = None) -> tuple[onnx.ModelProto,
                                                                                             Int8Choice]:
    """The int8 graph of the fp32 ``model`` that meets ``config.budget_points`` with the fewest fp32 layers.

    Args:
        model: The fp32 graph with its LRN lowered (and, for the conv form, prepared for int8).
        torch_model: The PyTorch fp32 model, the reference the drop is measured against.
        calibration_set: The calibration images (never the validation images).
        images: Labelled validation images; None: nothing is measured and MinMax on every layer is used.
        config: Methods, budget (points) and I/O names.

    Raises:
        Int8BudgetError: no graph met the budget. ExportError: a calibration or graph problem.
    """
    step = progress or (lambda message: None)
    start = time.perf_counter()
    plan = plan_int8(model)
    if not plan.layers:
        raise ExportError("int8: the graph has no Conv/Gemm layer to quantize")
    batches = calibration_set.batches(config.batch or CALIBRATION_BATCH, exact=config.batch is not None)
    step(f"calibrating {', '.join(config.methods)} ranges of {len(plan.tensors())} tensors on up to "
         f"{len(calibration_set)} images (until they settle)")
    calibration = calibrate(model, plan.tensors(), batches, input_name=config.input_name, methods=config.methods,
                            progress=step)
    quantizer = Quantizer(model, plan)
    if images is None or images.labels is None:
        method = "minmax" if "minmax" in config.methods else config.methods[0]
        log.info("int8: no labelled validation images, so no calibration method can be judged; using %s", method)
        choice = Int8Choice(method, (), plan.names, plan.form, None, None, calibration, (), {},
                            time.perf_counter() - start)
        return quantizer.build(calibration.ranges[method]), choice
    reference = torch_logits(torch_model, images)
    with tempfile.TemporaryDirectory(prefix="alexnet-int8-") as tmp:
        evaluator = _Evaluator(quantizer, calibration, images, reference, config, Path(tmp), torch_model)
        best, sensitivity = _search(evaluator, config.budget_points, step)
    choice = Int8Choice(best.method, best.kept, tuple(n for n in plan.names if n not in best.kept), plan.form,
                        config.budget_points, best.comparison, calibration, tuple(evaluator.done), sensitivity,
                        time.perf_counter() - start)
    log.info("int8: %s, drop %.2f points (budget %s)", best.label, best.comparison.drop_points, config.budget_points)
    return evaluator.build(best.method, best.kept), choice


def _search(evaluator: _Evaluator, budget: float | None, step: Callable[[str], None]) -> tuple[Candidate, dict]:
    """Steps 2-4 of the module docstring: the chosen candidate and the per-layer sensitivity (when it was needed)."""
    methods = []
    for method in evaluator.config.methods:
        step(f"int8 {method}: measuring accuracy on {len(evaluator.images)} validation images")
        methods.append(evaluator.measure(method))
    best = min(methods, key=_rank)
    if best.meets(budget):
        return best, {}
    names = evaluator.quantizer.plan.names
    step(f"int8: best method {best.label} drops {best.comparison.drop_points:.2f} points (budget {budget:g}); "
         f"measuring each of {len(names)} layers alone")
    alone = {name: evaluator.measure(best.method, only=name, step="sensitivity") for name in names}
    order = sorted(names, key=lambda n: (-alone[n].comparison.logit_error, -alone[n].comparison.drop_points))
    sensitivity = {n: {"logit_error": round(alone[n].comparison.logit_error, 6),
                       "drop_points": round(alone[n].comparison.drop_points, 4), "rank": order.index(n) + 1}
                   for n in names}
    kept: list[str] = []
    found = None
    for name in order[:-1]:  # at least one layer stays int8
        kept.append(name)
        step(f"int8: keeping {', '.join(kept)} in fp32")
        candidate = evaluator.measure(best.method, tuple(kept), "fallback")
        if candidate.meets(budget):
            found = candidate
            break
    if found is None:
        closest = min(evaluator.done, key=_rank)
        raise Int8BudgetError(
            f"no int8 graph meets the accuracy budget of {budget:g} points and the image parity gate: the best lost "
            f"{closest.comparison.drop_points:.2f} points ({closest.label}; fp32 "
            f"{closest.comparison.reference_accuracy:.2%} → {closest.comparison.accuracy:.2%}, top-1 agreement "
            f"{closest.comparison.agreement:.2%} on {closest.comparison.images} validation images); export fp32 or "
            "fp16, or allow a larger --max-accuracy-drop")
    for name in reversed(found.kept[:-1]):  # the least sensitive first; the last one added was needed
        trial = tuple(n for n in found.kept if n != name)
        candidate = evaluator.measure(best.method, trial, "prune")
        if candidate.meets(budget):
            found = candidate
    return found, sensitivity


def _rank(candidate: Candidate) -> tuple:
    """Passing the parity gates first, then lower drop, fewer fp32 layers, then MinMax before the clipping methods
    (at the same accuracy the ranges that cover every calibration value; entropy and percentile clip, and inputs
    beyond what was calibrated then saturate: measured on a random-weight model, percentile kept 100 % top-1
    agreement on the validation images and 40 % on noise), then smaller logit error."""
    c = candidate.comparison
    order = METHODS.index(candidate.method) if candidate.method in METHODS else len(METHODS)
    return (not candidate.parity, round(c.drop_points, 6), len(candidate.kept), order, c.logit_error)
