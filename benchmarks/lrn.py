"""LRN forward + backward: trainer.lrn.LocalResponseNorm vs torch's nn.LocalResponseNorm, interleaved in one process.

Shape: AlexNet's first LRN at batch 64 ([64, 96, 55, 55]), the paper's constants, fp32 on the CPU. Prints the median
ms per forward+backward of each and their ratio. The trainer's allocator settings (trainer.device.tune_allocator)
apply to both unless --glibc-defaults.

Usage:  python benchmarks/lrn.py [--batch 64] [--rounds 7] [--threads 2] [--glibc-defaults]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from core.host import tune_allocator  # noqa: E402
from trainer.lrn import LocalResponseNorm  # noqa: E402


def _step_ms(module: nn.Module, x: torch.Tensor, grad: torch.Tensor) -> float:
    x.grad = None
    start = time.perf_counter()
    module(x).backward(grad)
    return (time.perf_counter() - start) * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--glibc-defaults", action="store_true", help="leave malloc's settings alone")
    args = parser.parse_args()
    if not args.glibc_defaults:
        tune_allocator()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    x = torch.relu(torch.randn(args.batch, 96, 55, 55)).requires_grad_()
    grad = torch.randn(args.batch, 96, 55, 55)
    variants = {"torch nn.LocalResponseNorm": nn.LocalResponseNorm(5, alpha=1e-4, beta=0.75, k=2.0),
                "trainer.lrn.LocalResponseNorm": LocalResponseNorm(5, alpha=1e-4, beta=0.75, k=2.0)}
    times: dict[str, list[float]] = {name: [] for name in variants}
    for module in variants.values():  # warm-up
        _step_ms(module, x, grad)
    for _ in range(args.rounds):
        for name, module in variants.items():
            times[name].append(_step_ms(module, x, grad))
    medians = {name: statistics.median(t) for name, t in times.items()}
    for name, ms in medians.items():
        print(f"{name:32s} {ms:8.1f} ms  (median of {args.rounds})")
    stock, ours = medians.values()
    print(f"speed-up: {stock / ours:.1f}x")


if __name__ == "__main__":
    main()
