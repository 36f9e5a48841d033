"""LRN formulations on ONNX Runtime CPU: what each way of writing AlexNet's LRN costs, measured in one process.

    .venv/bin/python benchmarks/export_lrn.py [--batch 8] [--threads 2] [--rounds 5] [--profile]

Every variant is the same exported AlexNet (random 1000-class weights) with only its two LRNs written differently,
plus an "identity" graph with the LRNs removed: a variant's LRN cost is its time minus the identity graph's, which
includes the layout reorders the LRN forces around ONNX Runtime's NCHWc convolutions. Timings are interleaved
(round-robin) medians; ``--profile`` adds ONNX Runtime's per-operator times (summed per op type, ms per run).
"""
from __future__ import annotations

import argparse
import collections
import copy
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--calls", type=int, default=3, help="timed calls per variant per round")
    parser.add_argument("--profile", action="store_true", help="also print per-op-type times from an ORT profile")
    args = parser.parse_args()

    from benchmarks.export import _random_checkpoint

    with tempfile.TemporaryDirectory(prefix="export-lrn-") as tmp:  # 218 MB of weights: never left behind
        checkpoint = _random_checkpoint(Path(tmp) / "run")
        native = _native_graph(checkpoint)
        stock = _stock_graphs(checkpoint)
    variants = {"identity (no LRN)": _replace_lrn(native, "identity"), "native LRN": native}
    for kind in ("conv", "conv5x1", "pool3d", "pool2d", "matmul"):
        for power in ("sqrt", "pow"):
            variants[f"{kind}+{power}"] = _replace_lrn(native, kind, power)
    variants.update(stock)
    x = np.random.default_rng(0).standard_normal((args.batch, 3, 227, 227), dtype=np.float32)
    sessions = {name: _session(m, args.threads) for name, m in variants.items()}
    reference = sessions["native LRN"].run(None, {"input": x})[0]
    times = {name: [] for name in sessions}
    for s in sessions.values():
        s.run(None, {"input": x})
    for _ in range(args.rounds):
        for name, s in sessions.items():
            for _ in range(args.calls):
                start = time.perf_counter()
                s.run(None, {"input": x})
                times[name].append(time.perf_counter() - start)
            time.sleep(0.03)
    base = statistics.median(times["identity (no LRN)"])
    print(f"\nbatch {args.batch}, {args.threads} threads, {args.rounds}x{args.calls} interleaved calls\n")
    print("| LRN formulation | median ms | LRN cost ms (vs identity) | max abs diff vs native |")
    print("|---|---|---|---|")
    for name, s in sessions.items():
        median = statistics.median(times[name])
        diff = float(np.abs(s.run(None, {"input": x})[0] - reference).max()) if "identity" not in name else float("nan")
        print(f"| {name} | {median * 1e3:.1f} | {(median - base) * 1e3:.1f} | {diff:.2e} |")
    if args.profile:
        for name, m in variants.items():
            print(f"{name}: {json.dumps(_profile(m, x, args.threads))}")


def _native_graph(checkpoint: Path) -> onnx.ModelProto:
    from export.exporter import _torch_export
    from export.lrn import lower_lrn
    from export.spec import ExportSpec
    from trainer.checkpoint import load_checkpoint

    return lower_lrn(_torch_export(load_checkpoint(checkpoint).build_model(), ExportSpec()), "native")


def _stock_graphs(checkpoint: Path) -> dict[str, onnx.ModelProto]:
    """torch.onnx's own decompositions of nn.LocalResponseNorm (dynamo and TorchScript exporters)."""
    from benchmarks.export import _stock_export

    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        stock = (("torch.onnx dynamo decomposition", True), ("torch.onnx TorchScript decomposition", False))
        for name, dynamo in stock:
            path = Path(tmp) / "stock.onnx"
            _stock_export(checkpoint, path, dynamo)
            out[name] = onnx.load(str(path))
    return out


def _replace_lrn(model: onnx.ModelProto, kind: str, power: str = "sqrt") -> onnx.ModelProto:
    """The alternatives that lost (and the identity baseline); export/lrn.py keeps only native and conv+sqrt."""
    from export.lrn import _conv_band, _params, band_weight, scale_by_power

    model = copy.deepcopy(model)
    channels = {n.input[0]: c for n, c in zip([n for n in model.graph.node if n.op_type == "LRN"], (96, 256))}
    nodes, inits = [], []
    for node in model.graph.node:
        if node.op_type != "LRN":
            nodes.append(node)
            continue
        x, y, t, p = node.input[0], node.output[0], (lambda s, n=node.name: f"{n}.{s}"), _params(node)
        c = channels[x]
        if kind == "identity":
            nodes.append(helper.make_node("Identity", [x], [y], name=t("id")))
            continue
        if kind == "conv" and power == "sqrt":
            new_nodes, new_inits = _conv_band(node, c)
            nodes += new_nodes
            inits += new_inits
            continue
        inits += [numpy_helper.from_array(np.array(p.alpha / p.size, np.float32), t("a")),
                  numpy_helper.from_array(np.array(p.k, np.float32), t("k"))]
        nodes.append(helper.make_node("Mul", [x, x], [t("sq")], name=t("sq")))
        if kind == "conv":
            inits.append(numpy_helper.from_array(band_weight(c, p), t("band")))
            inits.append(numpy_helper.from_array(np.full(c, p.k, np.float32), t("kb")))
            nodes.append(helper.make_node("Conv", [t("sq"), t("band"), t("kb")], [t("d")], name=t("conv")))
        else:
            if kind == "pool3d":  # what the exporters emit: [N,1,C,H,W], AveragePool (size,1,1)
                inits.append(numpy_helper.from_array(np.array([1], np.int64), t("axis")))
                nodes.append(helper.make_node("Unsqueeze", [t("sq"), t("axis")], [t("sq5")], name=t("unsq")))
                nodes.append(helper.make_node("AveragePool", [t("sq5")], [t("s5")], name=t("pool"),
                                              kernel_shape=[p.size, 1, 1], pads=[2, 0, 0, 2, 0, 0],
                                              count_include_pad=1))
                nodes.append(helper.make_node("Squeeze", [t("s5"), t("axis")], [t("avg")], name=t("sqz")))
            elif kind == "conv5x1":  # a 1-channel (size x 1) Conv over channels as a spatial axis of [N,1,C,H*W]
                inits += [numpy_helper.from_array(np.array([0, 1, c, -1], np.int64), t("shape4")),
                          numpy_helper.from_array(np.full((1, 1, p.size, 1), 1.0 / p.size, np.float32), t("w51"))]
                nodes += [helper.make_node("Reshape", [t("sq"), t("shape4")], [t("sq4")], name=t("r4")),
                          helper.make_node("Conv", [t("sq4"), t("w51")], [t("s4")], name=t("conv51"),
                                           kernel_shape=[p.size, 1], pads=[2, 0, 2, 0]),
                          helper.make_node("Shape", [x], [t("shape")], name=t("shape")),
                          helper.make_node("Reshape", [t("s4"), t("shape")], [t("avg")], name=t("r"))]
            elif kind == "pool2d":  # channels as a spatial axis of [N,1,C,H*W]
                inits.append(numpy_helper.from_array(np.array([0, 1, c, -1], np.int64), t("shape4")))
                nodes += [helper.make_node("Reshape", [t("sq"), t("shape4")], [t("sq4")], name=t("r4")),
                          helper.make_node("AveragePool", [t("sq4")], [t("s4")], name=t("pool"),
                                           kernel_shape=[p.size, 1], pads=[2, 0, 2, 0], count_include_pad=1),
                          helper.make_node("Shape", [x], [t("shape")], name=t("shape")),
                          helper.make_node("Reshape", [t("s4"), t("shape")], [t("avg")], name=t("r"))]
            else:  # matmul: band[C,C] @ x^2 viewed as [N,C,H*W]
                inits += [numpy_helper.from_array(band_weight(c, p)[:, :, 0, 0] / (p.alpha / p.size), t("band")),
                          numpy_helper.from_array(np.array([0, c, -1], np.int64), t("shape3"))]
                nodes += [helper.make_node("Reshape", [t("sq"), t("shape3")], [t("sq3")], name=t("r3")),
                          helper.make_node("MatMul", [t("band"), t("sq3")], [t("s3")], name=t("mm")),
                          helper.make_node("Shape", [x], [t("shape")], name=t("shape")),
                          helper.make_node("Reshape", [t("s3"), t("shape")], [t("sum")], name=t("r"))]
                nodes.append(helper.make_node("Mul", [t("sum"), t("a")], [t("avg")], name=t("alpha_n")))
            if kind != "matmul":
                inits.append(numpy_helper.from_array(np.array(p.alpha, np.float32), t("alpha")))
                nodes.append(helper.make_node("Mul", [t("avg"), t("alpha")], [t("avg_a")], name=t("alpha")))
            else:
                nodes.append(helper.make_node("Identity", [t("avg")], [t("avg_a")], name=t("id")))
            nodes.append(helper.make_node("Add", [t("avg_a"), t("k")], [t("d")], name=t("add_k")))
        tail, tail_inits = scale_by_power(x, y, p.beta, t, use_sqrt=power == "sqrt")
        nodes += tail
        inits += tail_inits
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    model.graph.initializer.extend(inits)
    return model


def _session(model: onnx.ModelProto, threads: int, profile: str | None = None):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    options.log_severity_level = 3
    if profile:
        options.enable_profiling, options.profile_file_prefix = True, profile
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


def _profile(model: onnx.ModelProto, x: np.ndarray, threads: int, runs: int = 5) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        session = _session(model, threads, str(Path(tmp) / "p"))
        for _ in range(runs + 1):
            session.run(None, {"input": x})
        events = json.loads(Path(session.end_profiling()).read_text())
    per_op: dict[str, float] = collections.defaultdict(float)
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            per_op[e["args"]["op_name"]] += e["dur"] / 1e3 / (runs + 1)
    return {k: round(v, 2) for k, v in sorted(per_op.items(), key=lambda kv: -kv[1])}


if __name__ == "__main__":
    main()
