"""Harness overhead and the ORT-vs-torch CPU comparison, each judged against a baseline measured in the same process.

1. Harness overhead: the bench harness's p50 vs a bare ``time.perf_counter()`` loop calling the same ONNX Runtime
   session on the same input, interleaved round by round. Target: ratio within 1.00 ± 0.05.
2. ``onnxruntime`` fp32 vs ``torch`` eager fp32 at batch 1/8/32, interleaved, in two fresh processes:
   * project: ``trainer.model.AlexNet`` (its fast LRN) + ``tune_allocator()``; ORT on the project's export
     (``export.exporter.export_onnx`` defaults, as ``cli.py export`` writes it);
   * plain: the same weights with stock ``nn.LocalResponseNorm`` and glibc's default malloc; ORT on a plain
     ``torch.onnx.export`` of that model.
   Target (issue): ORT ≥ 2× torch eager at batch 32.

Usage:  python benchmarks/harness_overhead.py [--checkpoint RUN --onnx MODEL.onnx] [--rounds 5] [--skip-compare]
                                             [--json out.json]
Numbers from a shared 2-core VM are noisy: read the ratios, not the absolute values.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def make_checkpoint(folder: Path) -> Path:
    """A random-init 10-class AlexNet run folder (the weights every variant shares)."""
    import torch

    from trainer.checkpoint import model_metadata, save_checkpoint
    from trainer.data import IMAGENET_MEAN, IMAGENET_STD
    from trainer.model import AlexNet

    torch.manual_seed(0)
    names = [f"class{i}" for i in range(10)]
    return save_checkpoint(folder, AlexNet(10).state_dict(), model_metadata(10, names, IMAGENET_MEAN, IMAGENET_STD,
                                                                            0.5))


def export_project(checkpoint: Path, path: Path) -> Path:
    """The project's export (``export.exporter.export_onnx`` with its defaults), i.e. what ``cli.py export`` writes."""
    from export.exporter import export_onnx

    export_onnx(checkpoint, path, parity_images=0)
    return path


def export_plain(checkpoint: Path, path: Path) -> Path:
    """A plain ``torch.onnx.export`` (dynamo, one file, IR 10) of the stock-LRN model."""
    import onnx
    import torch

    dynamic = {"x": {0: torch.export.Dim("batch", min=1, max=256)}}
    torch.onnx.export(build_model(checkpoint, stock_lrn=True), (torch.randn(2, 3, 227, 227),), str(path), dynamo=True,
                      external_data=False, input_names=["input"], output_names=["logits"], dynamic_shapes=dynamic,
                      verbose=False)
    proto = onnx.load(str(path))
    proto.ir_version = min(proto.ir_version, 10)
    onnx.save(proto, str(path))
    return path


def build_model(checkpoint: Path, stock_lrn: bool):
    from torch import nn

    from trainer.checkpoint import load_checkpoint
    from trainer.lrn import LocalResponseNorm

    model = load_checkpoint(checkpoint).build_model().eval()
    if stock_lrn:
        for parent in model.modules():
            for name, child in list(parent.named_children()):
                if isinstance(child, LocalResponseNorm):
                    setattr(parent, name, nn.LocalResponseNorm(child.size, child.alpha, child.beta, child.k))
    return model


def micro_model(path: Path) -> Path:
    """A one-node ONNX model (Relu on N×3×227×227) whose run takes microseconds: shows the harness's own cost."""
    import onnx
    from onnx import TensorProto, helper

    shape = ["batch", 3, 227, 227]
    graph = helper.make_graph([helper.make_node("Relu", ["input"], ["logits"])], "micro",
                              [helper.make_tensor_value_info("input", TensorProto.FLOAT, shape)],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, shape)])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)], ir_version=10), str(path))
    return path


def harness_overhead(onnx_path: Path, batch: int, rounds: int, iters: int) -> dict:
    """Interleave the harness and a bare loop on one session; compare medians of all per-call times."""
    from deploy.bench.timing import BenchConfig, measure
    from runtimes.ort_runtime import OrtRuntime

    x = np.random.default_rng(0).standard_normal((batch, 3, 227, 227), dtype=np.float32)
    harness, bare = [], []
    with OrtRuntime(onnx_path) as rt:
        session, feeds = rt._session, {"input": x}
        for _ in range(3):
            session.run(None, feeds)
        for r in range(rounds):
            order = ("harness", "bare") if r % 2 == 0 else ("bare", "harness")
            for which in order:
                if which == "harness":
                    harness += measure(rt, feeds, BenchConfig(warmup_iters=1, iterations=iters)).host_ms
                else:
                    session.run(None, feeds)  # the same one warm-up call the harness makes
                    for _ in range(iters):
                        t0 = time.perf_counter()
                        session.run(None, feeds)
                        bare.append((time.perf_counter() - t0) * 1e3)
    h, b = float(np.median(harness)), float(np.median(bare))
    return {"model": onnx_path.stem, "batch": batch, "harness_p50_ms": h, "bare_p50_ms": b, "ratio": h / b,
            "extra_us": (h - b) * 1e3, "samples": len(harness)}


def compare_child(variant: str, onnx_path: Path, checkpoint: Path, rounds: int, iters: int,
                  batches: list[int], threads: int | None) -> dict:
    """Runs in its own process: torch eager vs ORT, interleaved per batch size."""
    import torch

    from runtimes.ort_runtime import OrtRuntime
    from core.host import usable_cores
    from runtimes.torch_runtime import TorchRuntime

    tuned = False
    if variant == "project":
        from core.host import tune_allocator

        tuned = tune_allocator()
    threads = threads or usable_cores()
    torch.set_num_threads(threads)
    out = {"variant": variant, "allocator_tuned": tuned, "threads": threads, "batches": {}}
    model = build_model(checkpoint, stock_lrn=variant == "plain")
    with TorchRuntime(model) as eager, OrtRuntime(onnx_path, threads=threads) as ort_rt:
        for batch in batches:
            x = {"input": np.random.default_rng(batch).standard_normal((batch, 3, 227, 227), dtype=np.float32)}
            times: dict[str, list[float]] = {"torch": [], "onnxruntime": []}
            for rt in (eager, ort_rt):  # warm-up
                rt.infer(x)
            for r in range(rounds):
                for name, rt in ((("torch", eager), ("onnxruntime", ort_rt)) if r % 2 == 0 else
                                 (("onnxruntime", ort_rt), ("torch", eager))):
                    rt.prepare(x)
                    for _ in range(iters):
                        t0 = time.perf_counter()
                        rt.run()
                        times[name].append((time.perf_counter() - t0) * 1e3)
                    time.sleep(0.03)  # let ORT's spinning threads settle before torch runs
            med = {k: float(np.median(v)) for k, v in times.items()}
            row = {f"{k}_ms": v for k, v in med.items()} | {f"{k}_img_s": batch * 1e3 / v for k, v in med.items()}
            out["batches"][batch] = row | {"ort_over_torch": med["torch"] / med["onnxruntime"]}
    return out


def run_child(variant: str, onnx_path: Path, checkpoint: Path, rounds: int, iters: int, batches: list[int],
              threads: int | None) -> dict:
    env = dict(os.environ)
    if variant == "plain":
        env["ALEXNET_DEPLOY_NO_MALLOPT"] = "1"  # glibc defaults, as a user's plain torch script would have
    cmd = [sys.executable, __file__, "--child", variant, "--onnx", str(onnx_path), "--checkpoint", str(checkpoint),
           "--rounds", str(rounds),
           "--iters", str(iters), "--batches", ",".join(map(str, batches))]
    cmd += ["--threads", str(threads)] if threads else []
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", type=Path, help="AlexNet checkpoint (default: a random-init one)")
    ap.add_argument("--onnx", type=Path, help="the checkpoint's ONNX export (default: the project's export of it)")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--iters", type=int, default=3, help="calls per round and variant")
    ap.add_argument("--batches", default="1,8,32")
    ap.add_argument("--threads", type=int, help="threads for torch and ORT (default: the usable cores)")
    ap.add_argument("--skip-compare", action="store_true", help="only the harness-overhead part")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--child", choices=["project", "plain"], help=argparse.SUPPRESS)
    args = ap.parse_args()
    batches = [int(b) for b in args.batches.split(",")]
    if args.child:
        print(json.dumps(compare_child(args.child, args.onnx, args.checkpoint, args.rounds, args.iters, batches,
                                       args.threads)))
        return
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = args.checkpoint or make_checkpoint(Path(tmp) / "run")
        project_onnx = args.onnx or export_project(checkpoint, Path(tmp) / "project.onnx")
        micro = micro_model(Path(tmp) / "micro.onnx")
        results: dict = {"harness": [harness_overhead(micro, 1, 10, 200)] +
                         [harness_overhead(project_onnx, b, args.rounds, 10 if b == 1 else 4) for b in (1, 8)]}
        for h in results["harness"]:
            print(f"harness overhead {h['model']} b{h['batch']}: harness p50 {h['harness_p50_ms']:.4f} ms vs bare "
                  f"loop {h['bare_p50_ms']:.4f} ms -> ratio {h['ratio']:.3f} ({h['extra_us']:+.1f} µs per call; "
                  f"target ratio 0.95-1.05 on AlexNet)", flush=True)
        if not args.skip_compare:
            plain_onnx = export_plain(checkpoint, Path(tmp) / "plain.onnx")
            for variant, onnx_path in (("project", project_onnx), ("plain", plain_onnx)):
                results[variant] = run_child(variant, onnx_path, checkpoint, args.rounds, args.iters, batches,
                                             args.threads)
            print(f"\nORT fp32 vs torch eager fp32 ({results['project']['threads']} threads; medians, interleaved "
                  "in one process per variant)")
            print(f"{'variant':8} {'batch':>5} {'torch ms':>9} {'ORT ms':>8} {'torch img/s':>11} {'ORT img/s':>9} "
                  f"{'ORT/torch':>9}")
            for variant in ("project", "plain"):
                for batch, r in results[variant]["batches"].items():
                    print(f"{variant:8} {batch:>5} {r['torch_ms']:9.1f} {r['onnxruntime_ms']:8.1f} "
                          f"{r['torch_img_s']:11.1f} {r['onnxruntime_img_s']:9.1f} {r['ort_over_torch']:8.2f}x")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
