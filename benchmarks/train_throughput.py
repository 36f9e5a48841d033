"""Training throughput: the trainer's step vs a plain eager PyTorch loop, full AlexNet, batch 64, 1000 classes.

Each variant runs in its own fresh process (the glibc allocator settings are process-wide, so sharing a process would
leak one variant's tuning into the other), and rounds alternate between variants so machine noise hits all of them.
Reported: median img/s per variant, the ratio to the plain loop, the share of the machine's fp32 training ceiling
(375 GFLOP/s ÷ 4.1356 GFLOP per training image = 91 img/s on the 2-core reference machine, see
docs/performance.md), and for the trainer with its real data pipeline, the share of step time spent
waiting for data.

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
TRAIN_GFLOP_PER_IMAGE = 4.1356
FP32_CEILING_GFLOPS = 375.0

VARIANTS = {
    # name: (description, worker args)
    "plain": "stock nn.LocalResponseNorm, glibc malloc defaults, fp32, synthetic tensors",
    "trainer-fp32": "Trainer._step: fast LRN, allocator tuning, channels_last, fused AdamW, fp32",
    "trainer": "Trainer._step with its default --amp (bf16 autocast on CPUs with native bf16)",
    "trainer+data": "a whole Trainer.train_one_epoch on the built-in data (JPEG decode + augmentation workers)",
}


def worker(variant: str, steps: int, batch_size: int) -> dict:
    """Run one variant in this process and return per-step timings (seconds)."""
    sys.path.insert(0, str(ROOT))
    import torch

    torch.manual_seed(0)
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
    trainer = Trainer(model, make_optimizer(config, model), *_datasets(variant), batch_size=batch_size,
                      device=device, amp_dtype=resolve_amp(config.amp, device), show_progress=False,
                      workers=-1 if variant != "trainer+data" else _workers())
    if variant == "trainer+data":  # a real epoch of the trainer, which measures its own data wait
        trainer.train_one_epoch(0, 1)  # warm-up epoch
        trainer.train_one_epoch(1, 2)
        t = trainer.last_epoch_timing
        n_steps = -(-t["images"] // batch_size)
        return {"variant": variant, "step_s": [t["seconds"] * batch_size / t["images"]] * n_steps,
                "wait_s": [t["data_wait_s"] / n_steps] * n_steps}
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
    return {"variant": variant, "step_s": times, "wait_s": [0.0] * len(times)}


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
    return {"step_s": times, "wait_s": [0.0] * len(times)}


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
    results: dict[str, list[dict]] = {n: [] for n in names}
    for r in range(args.rounds):
        for name in names:
            out = subprocess.run([sys.executable, __file__, "--worker", name, "--steps", str(args.steps),
                                  "--batch-size", str(args.batch_size)], capture_output=True, text=True, check=True)
            results[name].append(json.loads(out.stdout.strip().splitlines()[-1]))
            print(f"round {r + 1}/{args.rounds} {name}: done", file=sys.stderr, flush=True)
    ceiling = FP32_CEILING_GFLOPS / TRAIN_GFLOP_PER_IMAGE
    base = None
    print(f"\nbatch {args.batch_size}, 1000 classes, {args.rounds} rounds x {args.steps} steps; "
          f"fp32 training ceiling {ceiling:.0f} img/s\n")
    print("| variant | median ms/step | img/s | vs plain | % of fp32 ceiling | data wait | what |")
    print("|---|---|---|---|---|---|---|")
    for name in names:
        steps = [t for res in results[name] for t in res["step_s"]]
        waits = [w for res in results[name] for w in res["wait_s"]]
        med = statistics.median(steps)
        ips = args.batch_size / med
        base = base or (ips if name == "plain" else None)
        ratio = f"{ips / base:.2f}×" if base else "—"
        wait = f"{100 * sum(waits) / sum(steps):.1f} %" if name == "trainer+data" else "—"  # share of epoch time
        print(f"| {name} | {med * 1000:.0f} | {ips:.1f} | {ratio} | {100 * ips / ceiling:.0f} % | {wait} | "
              f"{VARIANTS[name]} |")


if __name__ == "__main__":
    main()
