"""Layer parity: every AlexNet layer of one runtime × precision against PyTorch fp32 on the same images, and the first
layer beyond the precision's tolerance (also as the one-row check a failed bench parity runs)."""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any

import numpy as np

from core.errors import ToolkitError, first_line
from deploy.layers.capture import (Activations, Graph, file_logits, load_graph, probed_file, reference_activations,
                                   runtime_activations)
from deploy.layers.compare import LAYER_TOLERANCES, LayerDiff, LayerTolerance, compare_layers, first_beyond
from deploy.models import TorchModel
from runtimes.options import RuntimeOptions
from runtimes.registry import runs_onnx

log = logging.getLogger(__name__)
DIVERGENCE_IMAGES = 8  # enough for a 2x weight or a wrong constant to stand out; one batch on every runtime


@dataclass(frozen=True)
class LayerParity:
    """One runtime × precision, layer by layer, against PyTorch fp32."""
    runtime: str
    precision: str
    file: str
    images: int
    tolerance: LayerTolerance
    layers: tuple[LayerDiff, ...]
    probe_effect: float | None = None  # max |logits of the probed copy - logits of the file itself|; None: not run
    error: str | None = None           # the row could not run (the reason)

    @property
    def first_divergence(self) -> LayerDiff | None:
        return first_beyond(self.layers)

    @property
    def passed(self) -> bool:
        return self.error is None and self.first_divergence is None

    def to_dict(self) -> dict[str, Any]:
        first = self.first_divergence
        return {"runtime": self.runtime, "precision": self.precision, "file": self.file, "images": self.images,
                "tolerance": self.tolerance.to_dict(), "passed": self.passed,
                "first_divergence": first.layer if first else None, "probe_effect_max_abs": self.probe_effect,
                "error": self.error, "layers": [d.to_dict() for d in self.layers]}


@dataclass(frozen=True)
class LayerDivergence:
    """The first layer of a runtime × precision beyond its tolerance, with the layer before it for contrast."""
    runtime: str
    precision: str
    file: str
    diff: LayerDiff
    previous: LayerDiff | None
    tolerance: LayerTolerance

    @property
    def layer(self) -> str:
        return self.diff.layer

    def to_dict(self) -> dict[str, Any]:
        return {"runtime": self.runtime, "precision": self.precision, "file": self.file, "layer": self.layer,
                "diff": self.diff.to_dict(), "previous": self.previous.to_dict() if self.previous else None,
                "tolerance": self.tolerance.to_dict()}

    def __str__(self) -> str:
        d, t = self.diff, self.tolerance
        before = (f"; {self.previous.layer} before it: {self.previous.rel_error:.2g}" if self.previous else
                  "; it is the first layer")
        return (f"first diverging layer: {d.layer} ({self.runtime} {self.precision}: relative error "
                f"{d.rel_error:.3g} (allowed {t.max_rel_error:g}), worst-image cosine {d.cosine:.4f}, max |diff| "
                f"{d.max_abs:.3g}{before})")


def tolerance_for_layers(precision: str) -> LayerTolerance:
    if precision not in LAYER_TOLERANCES:
        raise ToolkitError(f"no layer tolerance for precision {precision!r}; expected one of "
                           f"{', '.join(LAYER_TOLERANCES)}")
    return LAYER_TOLERANCES[precision]


def compare_row(reference: Activations, candidate: Activations, file: str,
                probe_effect: float | None = None) -> LayerParity:
    """A runtime's activations against the reference's, judged by its precision's layer tolerance."""
    tolerance = tolerance_for_layers(candidate.precision)
    diffs = compare_layers(reference.values, candidate.values, tolerance, candidate.tensors)
    return LayerParity(candidate.runtime, candidate.precision, file, int(len(reference.logits)), tolerance, diffs,
                       probe_effect)


def layer_parity(name: str, graph: Graph, torch_model: TorchModel | None, options: RuntimeOptions, images: np.ndarray,
                 reference: Activations, chunk: int, probe: bool = True) -> LayerParity:
    """One row: runtime ``name`` on the file behind ``graph`` (``load_graph``), every layer against ``reference``.

    Args:
        name: A registry name; torch runs the checkpoint (fp32 or, with ``options.precision``, bf16).
        graph: The file's :class:`deploy.layers.capture.Graph`.
        torch_model: The checkpoint (for torch and for the reference).
        options: Runtime settings as in the bench.
        images: ``N x 3 x 227 x 227`` float32.
        reference: PyTorch fp32 activations of the same images.
        chunk: The batch size they go through in.
        probe: Also run the unmodified file and report how much marking the layer outputs moved its logits.

    A failure of the runtime is kept in the row's ``error``, not raised: the other rows still run.
    """
    info, layer_map = graph.info, graph.layer_map
    precision = options.precision or info.precision
    try:
        if runs_onnx(name):
            with probed_file(graph) as path:
                candidate = runtime_activations(name, path, info, layer_map, torch_model, options, images, chunk)
            effect = (float(np.abs(file_logits(name, info, torch_model, options, images, chunk).astype(np.float64)
                                   - candidate.logits).max()) if probe else None)
        else:
            candidate, effect = runtime_activations(name, info.path, info, layer_map, torch_model, options, images,
                                                    chunk), (0.0 if probe else None)  # hooks change nothing
    except ToolkitError as e:
        log.warning("layer parity %s %s: %s", name, precision, first_line(e))
        return LayerParity(name, precision, str(info.path), len(images), tolerance_for_layers(precision), (),
                           None, first_line(e))
    row = compare_row(reference, candidate, str(info.path), effect)
    log.info("layer parity %s %s: %s", name, row.precision,
             f"first beyond tolerance {row.first_divergence.layer}" if row.first_divergence else "every layer within")
    return row


def first_divergence(onnx_path: str | os.PathLike, runtime_name: str, options: RuntimeOptions,
                     torch_model: TorchModel | None, images: np.ndarray,
                     max_images: int = DIVERGENCE_IMAGES) -> LayerDivergence | None:
    """Where a failing bench row first leaves its tolerance: the layer comparison on that row only.

    Args:
        onnx_path: The file the row ran.
        runtime_name: Its runtime; ``options.precision`` as in the bench (bf16 runs the fp32 file in bf16).
        options: The bench's runtime settings.
        torch_model: The PyTorch checkpoint (``deploy.models.reference_model``).
        images: Inputs (validation images when there are any), ``N x 3 x 227 x 227`` float32; the first
            ``max_images`` are used.

    Returns:
        The first layer beyond the precision's layer tolerance, or None when every layer is within it (the miss is
        then in the logits' own tolerance only).

    Raises:
        ToolkitError: no checkpoint, a file that is no exported AlexNet (LayerMapError), or the runtime failed.
    """
    graph = load_graph(onnx_path)
    info = graph.info
    x = np.ascontiguousarray(images[:max_images], dtype=np.float32)
    chunk = info.static_batch or len(x)
    if info.static_batch and len(x) != chunk:
        x = x[np.arange(chunk) % len(x)]
    reference = reference_activations(torch_model, info, options, x, chunk)
    row = layer_parity(runtime_name, graph, torch_model, options, x, reference, chunk, probe=False)
    if row.error:
        raise ToolkitError(f"layer comparison on {runtime_name}: {row.error}")
    first = row.first_divergence
    if first is None:
        return None
    index = row.layers.index(first)
    return LayerDivergence(row.runtime, row.precision, row.file, first, row.layers[index - 1] if index else None,
                           row.tolerance)
