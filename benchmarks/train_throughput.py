"""Training throughput: the trainer's step vs a plain eager PyTorch loop, full AlexNet, batch 64, 1000 classes.

Each variant runs in its own fresh process (the glibc allocator settings are process-wide, so sharing a process would
leak one variant's tuning into the other), and rounds alternate between variants so machine noise hits all of them.
Reported: median img/s per variant, the ratio to the plain loop, the share of the training ceiling *of the precision
the step computes in*, and for the trainer with its real data pipeline, the share of step time spent waiting for data.
The ceilings are measured in the same rounds, in their own process: torch's 4096³ matmul in fp32 and in bf16 (what
the trainer's bf16 autocast runs its convolutions and linears on), divided by 4.1356 GFLOP per training image. A
host's GEMM speed moves by 2x between machines, so only a ceiling from the same run says how close a step is.

    python benchmarks/train_throughput.py [--rounds 3] [--steps 6] [--batch-size 64]
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TRAIN_GFLOP_PER_IMAGE = 4.1356   # forward + both backward GEMMs, 1000 classes (docs/performance.md)
GEMM_N = 4096

VARIANTS = {
    # name: (description, worker args)
    "plain": "stock nn.LocalResponseNorm, glibc malloc defaults, fp32, synthetic tensors",
    "trainer-fp32": "Trainer._step: fast LRN, allocator tuning, channels_last, fused AdamW, fp32",
    "trainer": "Trainer._step with its default --amp (bf16 autocast on CPUs with native bf16)",
    "trainer+data": "a whole Trainer.train_one_epoch on the built-in data (JPEG decode + augmentation workers)",
}


def worker(variant: str, steps: int, batch_size: int) -> dict:
    """Run one variant in this process and return per-step timings (seconds) and the precision it computes in."""
    sys.path.insert(0, str(ROOT))
    import torch

    torch.manual_seed(0)
    if variant == "ceilings":
        return {"variant": variant, **_gemm_ceilings(steps)}
    if variant == "plain":
        return {"variant": variant, **_plain_loop(steps, batch_size)}
    from trainer.config import TrainConfig
    from trainer.device import resolve_amp
    from core.host import tune_allocator
    from trainer.loop import Trainer, to_training_layout
    from trainer.model import AlexNet
    from trainer.run import make_optimizer

    tune_allocator()
    device = torch.device("cpu")
    config = TrainConfig(batch_size=batch_size, amp="off" if variant == "trainer-fp32" else "auto")
    model = to_training_layout(AlexNet(num_classes=1000), device)
    amp = resolve_amp(config.amp, device)
    precision = {torch.bfloat16: "bf16", torch.float16: "fp16"}.get(amp, "fp32")
    trainer = Trainer(model, make_optimizer(config, model), *_datasets(variant), batch_size=batch_size,
                      device=device, amp_dtype=amp, show_progress=False,
                      workers=-1 if variant != "trainer+data" else _workers())
    if variant == "trainer+data":  # a real epoch of the trainer, which measures its own data wait
        trainer.train_one_epoch(0, 1)  # warm-up epoch
        trainer.train_one_epoch(1, 2)
        t = trainer.last_epoch_timing
        n_steps = -(-t["images"] // batch_size)
        return {"variant": variant, "step_s": [t["seconds"] * batch_size / t["images"]] * n_steps,
                "wait_s": [t["data_wait_s"] / n_steps] * n_steps, "precision": precision}
    images = torch.randn(batch_size, 3, 227, 227).contiguous(memory_format=torch.channels_last)
    labels = torch.randint(0, 1000, (batch_size,))
    model.train()
    times = []
    for i in range(steps + 2):  # two warm-up steps (allocator growth, oneDNN primitive caches)
        t0 = time.perf_counter()
        loss, _ = trainer._step(images, labels)
        loss.item()
        if i >= 2:
            times.append(time.perf_counter() - t0)
    return {"variant": variant, "step_s": times, "wait_s": [0.0] * len(times), "precision": precision}


def _gemm_ceilings(calls: int) -> dict:
    """torch's 4096³ matmul in fp32 and bf16 on this process's threads: GFLOP/s per call."""
    import torch

    a, b = torch.randn(GEMM_N, GEMM_N), torch.randn(GEMM_N, GEMM_N)
    out = {}
    for dtype, name in ((torch.float32, "fp32"), (torch.bfloat16, "bf16")):
        x, y = a.to(dtype), b.to(dtype)
        x @ y  # warm-up: thread pool, packing buffers
        rates = []
        for _ in range(calls):
            t0 = time.perf_counter()
            x @ y
            rates.append(2 * GEMM_N**3 / 1e9 / (time.perf_counter() - t0))
        out[name] = rates
    return {"gflops": out}


def _plain_loop(steps: int, batch_size: int) -> dict:
    """What a user gets from a textbook AlexNet in eager PyTorch: stock LRN, fp32, NCHW, glibc defaults."""
    import torch
    import torch.nn.functional as F
    from torch import nn

    from trainer.model import AlexNet

    model = AlexNet(num_classes=1000)
    for name in ("lrn1", "lrn2"):
        setattr(model.features, name, nn.LocalResponseNorm(5, alpha=1e-4, beta=0.75, k=2.0))
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9, weight_decay=5e-4)
    images, labels = torch.randn(batch_size, 3, 227, 227), torch.randint(0, 1000, (batch_size,))
    times = []
    for i in range(steps + 2):
        t0 = time.perf_counter()
        optimizer.zero_grad()
        F.cross_entropy(model(images), labels).backward()
        optimizer.step()
        if i >= 2:
            times.append(time.perf_counter() - t0)
    return {"step_s": times, "wait_s": [0.0] * len(times), "precision": "fp32"}


def _workers() -> int:
    from trainer.device import default_workers

    return default_workers()


def _datasets(variant: str):
    if variant != "trainer+data":
        return [], []
    from trainer.data import AugmentConfig, ImageListDataset, find_split, train_transform
    from trainer.synthetic import ensure_synthetic_dataset

    split = find_split(ensure_synthetic_dataset())
    return ImageListDataset(split.train, train_transform(AugmentConfig())), []


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="Alternating rounds (one process per variant each).")
    parser.add_argument("--steps", type=int, default=6, help="Timed steps per process.")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--variants", default=",".join(VARIANTS), help="Comma-separated subset of variants.")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.steps, args.batch_size)))
        return
    names = args.variants.split(",")
    results: dict[str, list[dict]] = {n: [] for n in names + ["ceilings"]}
    for r in range(args.rounds):
        for name in names + ["ceilings"]:
            out = subprocess.run([sys.executable, __file__, "--worker", name, "--steps", str(args.steps),
                                  "--batch-size", str(args.batch_size)], capture_output=True, text=True, check=True)
            results[name].append(json.loads(out.stdout.strip().splitlines()[-1]))
            print(f"round {r + 1}/{args.rounds} {name}: done", file=sys.stderr, flush=True)
    _print_table(names, results, args)


def _print_table(names: list[str], results: dict[str, list[dict]], args: argparse.Namespace) -> None:
    gflops = {p: [g for res in results["ceilings"] for g in res["gflops"][p]] for p in ("fp32", "bf16")}
    ceiling = {p: statistics.median(v) / TRAIN_GFLOP_PER_IMAGE for p, v in gflops.items()}
    print(f"\nbatch {args.batch_size}, 1000 classes, {args.rounds} rounds x {args.steps} steps; training ceilings "
          f"of this run: fp32 {ceiling['fp32']:.1f} img/s (torch mm {statistics.median(gflops['fp32']):.0f} GFLOP/s, "
          f"{_spread(gflops['fp32'])}), bf16 {ceiling['bf16']:.1f} img/s ({statistics.median(gflops['bf16']):.0f} "
          f"GFLOP/s, {_spread(gflops['bf16'])})\n")
    print("| variant | computes in | median ms/step (spread) | img/s | vs plain | % of its precision's ceiling | "
          "data wait | what |")
    print("|---|---|---|---|---|---|---|---|")
    base = None
    for name in names:
        steps = [t for res in results[name] for t in res["step_s"]]
        waits = [w for res in results[name] for w in res["wait_s"]]
        precision = results[name][0]["precision"]
        med = statistics.median(steps)
        ips = args.batch_size / med
        base = base or (ips if name == "plain" else None)
        ratio = f"{ips / base:.2f}×" if base else "—"
        wait = f"{100 * sum(waits) / sum(steps):.1f} %" if name == "trainer+data" else "—"  # share of epoch time
        print(f"| {name} | {precision} | {med * 1000:.0f} ({_spread(steps)}) | {ips:.1f} | {ratio} | "
              f"{100 * ips / ceiling[precision if precision in ceiling else 'fp32']:.0f} % | {wait} | "
              f"{VARIANTS[name]} |")


def _spread(values: list[float]) -> str:
    """min–max around the median, as ±%."""
    mid = statistics.median(values)
    return f"±{(max(values) - min(values)) / 2 / mid:.0%}"


if __name__ == "__main__":
    main()
