"""Export benchmark: export time per precision, and ONNX Runtime CPU throughput of every exported graph variant next to
torch eager, measured interleaved in one process.

    .venv/bin/python benchmarks/export.py [--checkpoint RUN] [--batch-sizes 1,32] [--rounds 7] [--json out.json]

Without ``--checkpoint`` it uses a random-init 1000-class AlexNet (the 1.449 GFLOP/img the ceiling below is quoted
for) whose metadata points at the built-in shapes data, so int8 calibrates on real images. Variants run round-robin,
each round a few calls per variant, so slow drifts and other tenants hit all of them alike; every block of calls also
records how busy the other processes kept the CPUs, and the "clean" median uses only blocks below 15 % foreign load.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from core.load import LoadWindow, wait_for_quiet  # noqa: E402  (needs the path above)

CEILING_GFLOPS = 375.0  # best fp32 GEMM ever measured on this 2-core machine type (ORT/MLAS sgemm), docs/performance.md
FOREIGN_LIMIT = 0.15    # a block with more foreign CPU use than this share is not "clean"
PEAK = "peak: ORT fp32 MatMul 4096^3"  # timed in the same rounds, to state the ceiling of *this* run
GEMM_N = 4096


@dataclass
class Variant:
    name: str
    path: Path | None                 # None = torch eager
    precision: str = "fp32"
    lrn: str = ""
    disabled_optimizers: tuple[str, ...] = ()
    export_s: dict[str, float] = field(default_factory=dict)
    accuracy: dict | None = None
    parity: list[str] = field(default_factory=list)
    size_mb: float = 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, help="run folder or .safetensors (default: random 1000-class)")
    parser.add_argument("--batch-sizes", default="1,32", help="comma-separated batch sizes")
    parser.add_argument("--rounds", type=int, default=7, help="round-robin rounds per batch size")
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="intra-op threads (torch and ORT)")
    parser.add_argument("--calls", default="1:10,32:2", help="timed calls per variant per round, per batch size")
    parser.add_argument("--only", default="",
                        help="comma-separated variant names to export and time "
                             "(torch eager, the baseline, always runs)")
    parser.add_argument("--quiet-wait", type=float, default=20.0,
                        help="before each round, wait up to this many seconds for other processes to go quiet")
    parser.add_argument("--out", type=Path, default=None, help="folder for the ONNX files (default: a temp folder)")
    parser.add_argument("--json", type=Path, default=None, help="write all samples and results as JSON")
    parser.add_argument("--reuse", action="store_true",
                        help="time the ONNX files already in --out instead of exporting again (no export times)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(message)s")

    import torch

    torch.set_num_threads(args.threads)
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        _run(args, args.out)
    else:  # ~1 GB of ONNX files and weights: removed afterwards unless --out asks to keep them
        with tempfile.TemporaryDirectory(prefix="export-bench-") as tmp:
            _run(args, Path(tmp))


def _run(args: argparse.Namespace, workdir: Path) -> None:
    checkpoint = args.checkpoint or workdir / "random-1000"
    if args.checkpoint is None and not (args.reuse and checkpoint.is_dir()):
        _random_checkpoint(checkpoint)
    keep = set(args.only.split(",")) if args.only else None
    variants = _export_all(checkpoint, workdir, args.reuse, keep)
    from trainer.checkpoint import load_checkpoint

    ckpt = load_checkpoint(checkpoint)
    gflop = _gflop_per_image(int(ckpt.meta["num_classes"]))
    calls = {int(k): int(v) for k, v in (item.split(":") for item in args.calls.split(","))}
    results = {}
    for batch in (int(b) for b in args.batch_sizes.split(",")):
        results[batch] = _time_interleaved(variants, ckpt.build_model(), batch, args.rounds,
                                           calls.get(batch, 2), args.threads, args.quiet_wait)
    _print_report(variants, results, gflop, args.threads)
    if args.json:
        args.json.write_text(json.dumps({"gflop_per_image": gflop, "threads": args.threads,
                                         "variants": [asdict(v) | {"path": str(v.path)} for v in variants],
                                         "results": results}, indent=2, default=str))


def _random_checkpoint(run_dir: Path) -> Path:
    import torch

    from trainer.checkpoint import model_metadata, save_checkpoint
    from trainer.data import IMAGENET_MEAN, IMAGENET_STD
    from trainer.model import AlexNet
    from trainer.synthetic import ensure_synthetic_dataset

    torch.manual_seed(0)
    model = AlexNet(1000)
    with torch.no_grad():  # non-zero biases and O(1) logits, like a trained model
        for m in model.modules():
            if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)):
                m.bias.uniform_(-0.05, 0.05)
        torch.nn.init.kaiming_normal_(model.classifier.fc8.weight, nonlinearity="relu")
    data = {"path": str(ensure_synthetic_dataset()), "val_split": 0.2, "seed": 0}
    meta = model_metadata(1000, [f"class{i}" for i in range(1000)], IMAGENET_MEAN, IMAGENET_STD, 0.5, data=data)
    save_checkpoint(run_dir, model.state_dict(), meta)
    return run_dir


def _export_all(checkpoint: Path, workdir: Path, reuse: bool = False, keep: set[str] | None = None) -> list[Variant]:
    """The exporter's variants (timed end to end) plus the two stock-exporter baselines; only ``keep`` if given."""
    from export.errors import ParityError
    from export.int8_search import Int8BudgetError
    from export.exporter import export_onnx
    from export.spec import ExportSpec

    no_qdq = "int8-conv (ORT without QDQ propagation)"

    def wanted(name: str) -> bool:  # the no-QDQ-propagation variant times the int8-conv file
        return keep is None or name in keep or (name == "int8-conv" and no_qdq in keep)

    variants = [Variant("torch-eager-fp32", None)]  # the baseline of every ratio: always timed
    for name, precision, lrn in (("fp32-conv", "fp32", "conv"), ("fp32-native", "fp32", "native"),
                                 ("fp16-conv", "fp16", "conv"), ("int8-conv", "int8", "conv")):
        if not wanted(name):
            continue
        path = workdir / f"{name}.onnx"
        variant = Variant(name, path, precision, lrn)
        start = time.perf_counter()
        if reuse and path.is_file():
            variant.size_mb = round(path.stat().st_size / 2**20, 1)
            variants.append(variant)
            continue
        try:
            result = export_onnx(checkpoint, path, ExportSpec(precision=precision, lrn=lrn))
            variant.export_s = {k: round(v, 2) for k, v in result.timings_s.items()}
            variant.accuracy, reports = result.accuracy, result.parity
        except (ParityError, Int8BudgetError) as e:  # random weights can miss the int8 gates; time it anyway
            export_onnx(checkpoint, path, ExportSpec(precision=precision, lrn=lrn, tolerance=_lenient(),
                                                     max_accuracy_drop=100.0))
            variant.export_s = {"total": round(time.perf_counter() - start, 2)}
            variant.accuracy, reports = getattr(e, "accuracy", None), getattr(e, "reports", ())
        variant.parity = [str(r) for r in reports]
        variant.size_mb = round(path.stat().st_size / 2**20, 1)
        variants.append(variant)
    variants.append(Variant(no_qdq, workdir / "int8-conv.onnx", "int8", "conv", ("QDQPropagationTransformer",)))
    for name, dynamo in (("fp32-stock-dynamo", True), ("fp32-stock-torchscript", False)):
        if not wanted(name):
            continue
        path = workdir / f"{name}.onnx"
        variant = Variant(name, path, "fp32", "decomposed by torch.onnx")
        start = time.perf_counter()
        if not (reuse and path.is_file()):
            _stock_export(checkpoint, path, dynamo)
        variant.export_s = {"total": round(time.perf_counter() - start, 2)}
        variant.size_mb = round(path.stat().st_size / 2**20, 1)
        variants.append(variant)
    return [v for v in variants if wanted(v.name) or v.path is None]


def _lenient():
    from runtimes.parity import Tolerance

    return Tolerance(atol=float("inf"), rtol=0.0, min_cosine=-1.0, min_top1_agreement=0.0)


def _stock_export(checkpoint: Path, path: Path, dynamo: bool) -> None:
    """What torch.onnx does with nn.LocalResponseNorm when left alone (the baselines of the LRN choice)."""
    import warnings

    import torch

    from trainer.checkpoint import load_checkpoint

    model = load_checkpoint(checkpoint).build_model()
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, torch.nn.LocalResponseNorm):
                setattr(parent, name, torch.nn.LocalResponseNorm(child.size, child.alpha, child.beta, child.k))
    x = torch.zeros(2, 3, 227, 227)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if dynamo:
            torch.onnx.export(model, (x,), str(path), dynamo=True, external_data=False, opset_version=20,
                              input_names=["input"], output_names=["logits"],
                              dynamic_shapes=({0: torch.export.Dim("batch", min=1, max=256)},), verbose=False)
        else:
            torch.onnx.export(model, (x,), str(path), dynamo=False, opset_version=17, input_names=["input"],
                              output_names=["logits"], dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}})


def layer_macs(num_classes: int) -> dict[str, int]:
    """Multiply-adds per 227x227 image of each AlexNet layer with weights (conv: out channels x kernel x outputs)."""
    convs = {"conv1": (96, 3 * 11 * 11, 55 * 55), "conv2": (256, 48 * 5 * 5, 27 * 27),
             "conv3": (384, 256 * 9, 13 * 13), "conv4": (384, 192 * 9, 13 * 13), "conv5": (256, 192 * 9, 13 * 13)}
    macs = {name: o * k * hw for name, (o, k, hw) in convs.items()}
    return macs | {"fc6": 9216 * 4096, "fc7": 4096 * 4096, "fc8": 4096 * num_classes}


def _gflop_per_image(num_classes: int) -> float:
    return 2 * sum(layer_macs(num_classes).values()) / 1e9


def _time_interleaved(variants: list[Variant], model, batch: int, rounds: int, calls: int, threads: int,
                      quiet_wait_s: float) -> dict:
    import onnxruntime as ort
    import torch

    x = np.random.default_rng(0).standard_normal((batch, 3, 227, 227), dtype=np.float32)
    runners = {}
    for v in variants:
        if v.path is None:
            xt = torch.from_numpy(x)
            runners[v.name] = lambda xt=xt: model(xt)
            continue
        options = ort.SessionOptions()
        options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3
        session = ort.InferenceSession(str(v.path), options, providers=["CPUExecutionProvider"],
                                       disabled_optimizers=list(v.disabled_optimizers))
        runners[v.name] = lambda s=session: s.run(None, {"input": x})
    runners[PEAK] = _gemm_probe(threads)
    samples = {name: [] for name in runners}
    with torch.inference_mode():
        for run in runners.values():  # warm-up: arenas, pre-packing, first-touch
            run(), run()
        for _ in range(rounds):
            wait_for_quiet(quiet_wait_s, FOREIGN_LIMIT)
            for name, run in runners.items():
                with LoadWindow() as load:
                    times = []
                    for _ in range(calls):
                        start = time.perf_counter()
                        run()
                        times.append(time.perf_counter() - start)
                samples[name].append({"latency_s": times, "foreign": round(load.foreign, 3)})
                time.sleep(0.03)  # let the previous variant's spinning threads settle
    return samples


def _gemm_probe(threads: int):
    """A 4096^3 fp32 MatMul on ONNX Runtime, timed among the variants: the machine's fp32 peak *in this run*."""
    from benchmarks.gemm_peak import ort_matmul

    rng = np.random.default_rng(1)
    run = ort_matmul(rng.standard_normal((GEMM_N, GEMM_N), dtype=np.float32), threads)
    a = rng.standard_normal((GEMM_N, GEMM_N), dtype=np.float32)
    return lambda: run(a)


def _print_report(variants: list[Variant], results: dict, gflop: float, threads: int) -> None:
    ceiling = CEILING_GFLOPS / gflop
    print(f"\nfp32 ceiling: {CEILING_GFLOPS:.0f} GFLOP/s / {gflop:.4f} GFLOP/img = {ceiling:.0f} img/s; "
          f"{threads} threads\n")
    print("| variant | LRN | file MB | export s | accuracy (fp32 → this) |")
    print("|---|---|---|---|---|")
    for v in variants:
        acc = (f"{v.accuracy['reference']:.2%} → {v.accuracy['onnx']:.2%} (n={int(v.accuracy['images'])})"
               if v.accuracy else "—")
        export = " / ".join(f"{k} {t}" for k, t in v.export_s.items()) or "—"
        print(f"| {v.name} | {v.lrn or '—'} | {v.size_mb or '—'} | {export} | {acc} |")
    for batch, samples in results.items():
        eager = _median(samples["torch-eager-fp32"])[0]
        peak = 2 * GEMM_N**3 / _median(samples[PEAK])[0] / 1e9
        run_ceiling = peak / gflop
        print(f"\n**batch {batch}**: median ms per call; clean = blocks with < {FOREIGN_LIMIT:.0%} foreign CPU. "
              f"This run's fp32 peak {peak:.0f} GFLOP/s → ceiling {run_ceiling:.0f} img/s\n")
        print("| variant | median ms | img/s | clean median ms (blocks) | % of 259 img/s | % of this run's ceiling "
              "| × torch eager |")
        print("|---|---|---|---|---|---|---|")
        for name, blocks in samples.items():
            if name == PEAK:
                continue
            median, clean, n_clean = _median(blocks)
            print(f"| {name} | {median * 1e3:.1f} | {batch / median:.1f} | "
                  f"{'—' if clean is None else f'{clean * 1e3:.1f}'} ({n_clean}/{len(blocks)}) | "
                  f"{batch / median / ceiling:.0%} | {batch / median / run_ceiling:.0%} | {eager / median:.2f} |")


def _median(blocks: list[dict]) -> tuple[float, float | None, int]:
    all_times = [t for b in blocks for t in b["latency_s"]]
    clean = [t for b in blocks if b["foreign"] < FOREIGN_LIMIT for t in b["latency_s"]]
    n_clean = sum(b["foreign"] < FOREIGN_LIMIT for b in blocks)
    return statistics.median(all_times), (statistics.median(clean) if clean else None), n_clean


if __name__ == "__main__":
    main()
