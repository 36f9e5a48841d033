"""The GEMM ceilings of this machine today: ONNX Runtime's MLAS fp32 MatMul against torch's (MKL) mm, interleaved,
and ONNX Runtime's int8 MatMulInteger (u8 x s8, what QLinearConv/QGemm run on).

    .venv/bin/python benchmarks/gemm_peak.py [--n 4096] [--rounds 7] [--threads 1,2]

Every ONNX-vs-torch target in this project rests on these two numbers: ONNX Runtime beats eager torch on
AlexNet's FC layers and convolutions only as far as MLAS's sgemm beats MKL's. docs/performance.md records what it
measured on this project's machine type on different days (from 181 to 375 GFLOP/s fp32); run this before reading
any absolute img/s figure. Ceilings in img/s divide by AlexNet's 1.449 GFLOP per image.
"""
from __future__ import annotations

import argparse
import statistics
import time
from typing import Callable

import numpy as np
import onnxruntime as ort
import torch
from onnx import TensorProto, helper, numpy_helper

GFLOP_PER_IMAGE = 1.449  # AlexNet forward, 1000 classes: conv + FC multiply-adds × 2 (docs/performance.md)


def ort_matmul(b: np.ndarray, threads: int) -> Callable[[np.ndarray], list]:
    """``a @ b`` on ONNX Runtime CPU with ``b`` a constant, as model weights are (MLAS pre-packs it once):
    ``MatMul`` for float32 ``b``, ``MatMulInteger`` (u8 ``a`` x s8 ``b``) for int8 ``b``."""
    op, a_type, c_type = (("MatMulInteger", TensorProto.UINT8, TensorProto.INT32) if b.dtype == np.int8 else
                          ("MatMul", TensorProto.FLOAT, TensorProto.FLOAT))
    graph = helper.make_graph([helper.make_node(op, ["a", "b"], ["c"])], "gemm",
                              [helper.make_tensor_value_info("a", a_type, [b.shape[0], b.shape[0]])],
                              [helper.make_tensor_value_info("c", c_type, [b.shape[0], b.shape[1]])],
                              [numpy_helper.from_array(b, "b")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)], ir_version=10)
    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return lambda a: session.run(None, {"a": a})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=4096, help="square matrix size")
    parser.add_argument("--rounds", type=int, default=7, help="interleaved timed calls per kernel")
    parser.add_argument("--threads", default="1,2", help="comma-separated thread counts")
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    a, b = (rng.standard_normal((args.n, args.n), dtype=np.float32) for _ in range(2))
    ta, tb = torch.from_numpy(a), torch.from_numpy(b)
    qa = rng.integers(0, 256, (args.n, args.n), dtype=np.uint8)
    qb = rng.integers(-127, 128, (args.n, args.n), dtype=np.int8)
    gflop = 2 * args.n**3 / 1e9
    print(f"{args.n}^3 fp32 GEMM, median GFLOP/s over {args.rounds} interleaved calls (best in brackets)\n")
    print("| threads | ONNX Runtime MatMul (MLAS) | torch mm (MKL) | ORT / torch | ORT int8 MatMulInteger GOP/s "
          "| ceilings img/s fp32 / int8 |")
    print("|---|---|---|---|---|---|")
    for threads in (int(t) for t in args.threads.split(",")):
        torch.set_num_threads(threads)
        fp32, int8 = ort_matmul(b, threads), ort_matmul(qb, threads)
        # Called only within this iteration, so binding the loop's fp32/int8 late is what we want.
        kernels = {"ort": lambda: fp32(a), "torch": lambda: ta @ tb, "int8": lambda: int8(qa)}  # noqa: B023
        samples: dict[str, list[float]] = {name: [] for name in kernels}
        for run in kernels.values():
            run()  # warm-up: thread pools, packing buffers
        for _ in range(args.rounds):
            for name, run in kernels.items():
                start = time.perf_counter()
                run()
                samples[name].append(gflop / (time.perf_counter() - start))
        ort_rate, torch_rate, int8_rate = (statistics.median(samples[k]) for k in ("ort", "torch", "int8"))
        print(f"| {threads} | {ort_rate:.0f} ({max(samples['ort']):.0f}) | {torch_rate:.0f} "
              f"({max(samples['torch']):.0f}) | {ort_rate / torch_rate:.2f}× | {int8_rate:.0f} "
              f"({max(samples['int8']):.0f}) | {max(ort_rate, torch_rate) / GFLOP_PER_IMAGE:.0f} / "
              f"{int8_rate / GFLOP_PER_IMAGE:.0f} |")


if __name__ == "__main__":
    main()
