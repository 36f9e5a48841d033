"""How LRN reaches the ONNX graph: one native ``LRN`` node at export, then optionally lowered to a faster formulation.

The exporter never lets PyTorch decompose LRN: both torch exporters emit Pad/AveragePool/Pow/Div chains (from
opset 19 on ONNX Runtime runs that 5-D AveragePool with a reference kernel, ~8x slower than at opset 17), and neither
keeps a single node that fp16 conversion can leave in fp32. Instead every LRN module is swapped for a custom op
(``torch.library.custom_op``) whose ONNX translation is one ``LRN`` node, and :func:`lower_lrn` then rewrites those
nodes:

* ``native``: keep the ``LRN`` node. TensorRT has a native LRN layer; ONNX Runtime's CPU kernel is the slowest choice.
* ``conv`` (default): ``d = Conv1x1(x*x, band)`` with a fixed banded ``C x C`` weight that holds ``alpha/size`` inside
  the channel window and the bias ``k``, then ``y = x / (sqrt(d) * sqrt(sqrt(d)))`` for the paper's beta = 0.75 (a
  general ``Pow`` otherwise). The cross-channel window sum becomes a small dense matrix product that ONNX Runtime runs
  in its blocked NCHWc convolution kernels, and two ``Sqrt`` replace ``Pow``, which ONNX Runtime computes with scalar
  ``std::pow``. Measured numbers are in docs/export.md.

Both forms compute ``y_c = x_c * (k + alpha/size * sum_{c' in window(c)} x_c'^2) ** -beta`` with ONNX's window
``[c - (size-1)//2, c + size//2]``. PyTorch centres even windows one channel lower, so only odd sizes (AlexNet's 5)
are exported; :func:`with_lrn_ops` refuses even ones.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Callable

import numpy as np
import onnx
import torch
from onnx import helper, numpy_helper
from torch import nn

from export.spec import DEFAULT_LRN, LRN_FORMULATIONS
_OP_NAMESPACE = "alexnet_deploy"
_OP_NAME = "lrn"
NODE_PREFIX = "lrn"  # every node that belongs to an LRN is named lrn<i> or lrn<i>.<part>


@dataclass(frozen=True)
class LrnParams:
    size: int
    alpha: float
    beta: float
    k: float


def _custom_op():
    """The ``alexnet_deploy::lrn`` custom op, registered on first use (registering twice raises)."""
    namespace = getattr(torch.ops, _OP_NAMESPACE)
    if hasattr(namespace, _OP_NAME):
        return getattr(namespace, _OP_NAME)

    @torch.library.custom_op(f"{_OP_NAMESPACE}::{_OP_NAME}", mutates_args=())
    def lrn(x: torch.Tensor, size: int, alpha: float, beta: float, k: float) -> torch.Tensor:
        return torch.nn.functional.local_response_norm(x, size, alpha, beta, k)

    @lrn.register_fake
    def _(x, size, alpha, beta, k):
        return torch.empty_like(x)

    return getattr(namespace, _OP_NAME)


def _lrn_translation(x, size: int, alpha: float, beta: float, k: float):
    from onnxscript import opset20 as op  # the LRN op is unchanged since opset 13; opset20 is what this onnxscript has

    return op.LRN(x, size=size, alpha=alpha, beta=beta, bias=k)


class _LrnOp(nn.Module):
    """Stands in for an LRN module during export: calls the custom op that becomes one ONNX ``LRN`` node."""

    def __init__(self, params: LrnParams) -> None:
        super().__init__()
        self.params = params

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = self.params
        return _custom_op().default(x, p.size, p.alpha, p.beta, p.k)


def with_lrn_ops(model: nn.Module) -> tuple[nn.Module, list[LrnParams]]:
    """A deep copy of ``model`` whose LRN modules (any ``nn.LocalResponseNorm``, so also the trainer's subclass) are
    replaced by export-time custom ops. Returns the copy and the LRN parameters in module order."""
    model = copy.deepcopy(model).eval()
    found: list[LrnParams] = []
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.LocalResponseNorm):
                if child.size % 2 == 0:
                    raise ValueError(f"LRN size {child.size}: only odd sizes export exactly (for even sizes PyTorch "
                                     "and ONNX centre the channel window differently)")
                params = LrnParams(int(child.size), float(child.alpha), float(child.beta), float(child.k))
                setattr(parent, name, _LrnOp(params))
                found.append(params)
    return model, found


def translation_table() -> dict:
    """``custom_translation_table`` for ``torch.onnx.export(dynamo=True)``."""
    return {_custom_op().default: _lrn_translation}


def is_lrn_node(node: onnx.NodeProto) -> bool:
    """True for the native LRN node and for every node of a lowered LRN (named ``lrn<i>[.<part>]``)."""
    head = node.name.split(".", 1)[0]
    return node.op_type == "LRN" or (head.startswith(NODE_PREFIX) and head[len(NODE_PREFIX):].isdigit())


def lower_lrn(model: onnx.ModelProto, formulation: str = DEFAULT_LRN) -> onnx.ModelProto:
    """Rename the native ``LRN`` nodes to ``lrn1``, ``lrn2``… and rewrite them as ``formulation`` (in place).

    Raises:
        ValueError: an unknown formulation, or an LRN input whose channel count shape inference cannot tell.
    """
    if formulation not in LRN_FORMULATIONS:
        raise ValueError(f"unknown LRN formulation {formulation!r}; expected one of {', '.join(LRN_FORMULATIONS)}")
    channels = _channel_counts(model)
    nodes, initializers = [], []
    index = 0
    for node in model.graph.node:
        if node.op_type != "LRN":
            nodes.append(node)
            continue
        index += 1
        node.name = f"{NODE_PREFIX}{index}"
        if formulation == "native":
            nodes.append(node)
            continue
        new_nodes, new_inits = _conv_band(node, channels[node.input[0]])
        nodes.extend(new_nodes)
        initializers.extend(new_inits)
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    model.graph.initializer.extend(initializers)
    return model


def prepare_lrn_for_int8(model: onnx.ModelProto) -> list[str]:
    """Let int8 quantize the conv form's window sum, and return the LRN node names that must stay fp32.

    The band convolution is a third of an int8 AlexNet's time in fp32 (ONNX Runtime, batch 8) and runs 3-4x faster as
    QLinearConv. Its bias ``k`` moves to an fp32 ``Add`` after it: an int8 ``d = k + sum`` would round the whole
    denominator to steps of ``max(d)/127`` (with d close to k = 2, every d becomes the same number), while
    ``alpha/size * sum`` alone keeps its int8 steps small next to k.
    """
    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    nodes = []
    for node in graph.node:
        nodes.append(node)
        if node.op_type == "Conv" and node.name.endswith(".window_sum") and len(node.input) == 3:
            prefix = node.name[:-len(".window_sum")]
            k = numpy_helper.to_array(inits[node.input[2]]).ravel()[0]
            graph.initializer.append(numpy_helper.from_array(np.array(k, np.float32), f"{prefix}.k_scalar"))
            d = node.output[0]
            del node.input[2]
            node.output[0] = f"{prefix}.sum"
            nodes.append(helper.make_node("Add", [node.output[0], f"{prefix}.k_scalar"], [d], name=f"{prefix}.add_k"))
    del graph.node[:]
    graph.node.extend(nodes)
    used = {name for n in graph.node for name in n.input}
    kept = [i for i in graph.initializer if i.name in used]
    del graph.initializer[:]
    graph.initializer.extend(kept)
    return [n.name for n in graph.node if is_lrn_node(n) and not n.name.endswith(".window_sum")]


def _params(node: onnx.NodeProto) -> LrnParams:
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    return LrnParams(int(attrs["size"]), float(attrs.get("alpha", 1e-4)), float(attrs.get("beta", 0.75)),
                     float(attrs.get("bias", 1.0)))


def band_weight(channels: int, p: LrnParams) -> np.ndarray:
    """The ``C x C x 1 x 1`` weight whose 1x1 convolution sums ``alpha/size * x^2`` over each channel's window."""
    before, after = (p.size - 1) // 2, p.size // 2
    w = np.zeros((channels, channels, 1, 1), np.float32)
    for c in range(channels):
        w[c, max(0, c - before):min(channels, c + after + 1)] = p.alpha / p.size
    return w


def _conv_band(node: onnx.NodeProto, channels: int) -> tuple[list[onnx.NodeProto], list[onnx.TensorProto]]:
    p = _params(node)
    x, y, name = node.input[0], node.output[0], node.name
    t = lambda part: f"{name}.{part}"  # noqa: E731 - tensor and node names share the lrn<i>.<part> scheme
    inits = [numpy_helper.from_array(band_weight(channels, p), t("band")),
             numpy_helper.from_array(np.full(channels, p.k, np.float32), t("k"))]
    nodes = [helper.make_node("Mul", [x, x], [t("square")], name=t("square")),
             helper.make_node("Conv", [t("square"), t("band"), t("k")], [t("d")], name=t("window_sum"),
                              kernel_shape=[1, 1])]
    tail, tail_inits = scale_by_power(x, y, p.beta, t)
    return nodes + tail, inits + tail_inits


def scale_by_power(x: str, y: str, beta: float, t: Callable[[str], str],
                   use_sqrt: bool | None = None) -> tuple[list[onnx.NodeProto], list[onnx.TensorProto]]:
    """``y = x * d ** -beta`` for the LRN denominator tensor ``t("d")``; ``t`` names this LRN's tensors and nodes.

    ``use_sqrt`` (default: when beta is 0.75) writes d^-0.75 as 1 / (d^0.5 * d^0.25): two vectorised square roots
    instead of a scalar pow per element. Otherwise one ``Pow`` with exponent ``-beta``.
    """
    if (beta == 0.75) if use_sqrt is None else use_sqrt:
        if beta != 0.75:
            raise ValueError(f"the square-root form computes beta = 0.75 only, not {beta}")
        return [helper.make_node("Sqrt", [t("d")], [t("d_sqrt")], name=t("sqrt")),
                helper.make_node("Sqrt", [t("d_sqrt")], [t("d_qrt")], name=t("sqrt_sqrt")),
                helper.make_node("Mul", [t("d_sqrt"), t("d_qrt")], [t("d_pow")], name=t("pow")),
                helper.make_node("Div", [x, t("d_pow")], [y], name=t("scale"))], []
    return ([helper.make_node("Pow", [t("d"), t("neg_beta")], [t("d_pow")], name=t("pow")),
             helper.make_node("Mul", [x, t("d_pow")], [y], name=t("scale"))],
            [numpy_helper.from_array(np.array(-beta, np.float32), t("neg_beta"))])


def _channel_counts(model: onnx.ModelProto) -> dict[str, int]:
    """Static channel count (dim 1) of every LRN input, from shape inference."""
    inferred = onnx.shape_inference.infer_shapes(model)
    shapes = {v.name: v.type.tensor_type.shape for v in
              list(inferred.graph.value_info) + list(inferred.graph.input) + list(inferred.graph.output)}
    counts = {}
    for node in model.graph.node:
        if node.op_type == "LRN":
            shape = shapes.get(node.input[0])
            if shape is None or len(shape.dim) < 2 or not shape.dim[1].HasField("dim_value"):
                raise ValueError(f"cannot tell the channel count of LRN input {node.input[0]!r}")
            counts[node.input[0]] = shape.dim[1].dim_value
    return counts
