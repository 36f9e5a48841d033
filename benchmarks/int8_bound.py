"""How close int8 AlexNet can come to this host's int8 GEMM ceiling, read off each runtime's own profile: the layers
that run on GEMM kernels (conv1-conv5, fc6-fc8) against the rest (the LRN blocks and the pools, with the layout
reorders they need), and the rate the GEMM layers would need for a target share of the ceiling measured in the same
rounds.

    flock /tmp/alexnet-cpu.lock .venv/bin/python benchmarks/int8_bound.py [--native FILE] [--conv FILE]
        [--batch 32] [--rounds 5] [--duration 2] [--targets openvino=0.9,onnxruntime=0.65]

Per round, interleaved: the int8 GEMM kernels of benchmarks/cpu_runtimes.py (the ceiling is the faster one, in img/s
at 1.4488 GOP per image, as in benchmarks/int8.py), then for each file its end-to-end p50 at ``--batch`` and its
profile (deploy/layers: OpenVINO's PERF_COUNT on the native-LRN file, ONNX Runtime's session profiling on the
conv-LRN file). Medians over the rounds.

The bound. At a share s of a ceiling of C img/s a batch of B may take B / (s C) ms x 1000. The profiled time of the
non-GEMM layers, O, is not GEMM work whatever the kernels do, so the GEMM layers get B / (s C) - O for their
B x 1.4488 GOP: the rate that needs is set beside the fastest rate any GEMM layer reached in the same profile. The
split favours the target: a reorder feeding a convolution (the input's quantize-and-reorder, say) counts as that
convolution's GEMM time, and O is the profiler's time, which leaves out the calls' own overhead. ``s_max`` is the share
if every GEMM layer ran exactly at the ceiling: (B / C) / (B / C + O); "share with free other layers" is the share
if the GEMM layers ran as they did and everything else took no time: (B / C) / G.
"""
from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.cpu_runtimes import GFLOP_PER_IMAGE, _gemm_kernels, _time_gemm  # noqa: E402
from benchmarks.export import layer_macs  # noqa: E402

def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--native", type=Path, default=Path("runs/demo/onnx/model.int8.native-lrn.onnx"),
                        help="the native-LRN int8 file (OpenVINO)")
    parser.add_argument("--conv", type=Path, default=Path("runs/demo/onnx/model.int8.onnx"),
                        help="the conv-LRN int8 file (ONNX Runtime)")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--duration", type=float, default=2.0, help="timed seconds per file per round")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--targets", default="openvino=0.9,onnxruntime=0.65", help="runtime=share of the ceiling")
    args = parser.parse_args()
    targets = {k: float(v) for k, v in (item.split("=") for item in args.targets.split(","))}
    rows = {"openvino": args.native, "onnxruntime": args.conv}
    missing = [str(p) for p in rows.values() if not p.is_file()]
    if missing:
        sys.exit(f"int8_bound: no such file: {', '.join(missing)} (run `make demo` or pass --native/--conv)")
    ceilings, samples, classes = _measure(args, rows)
    _report(args, rows, ceilings, samples, classes, targets)


def _measure(args: argparse.Namespace, rows: dict[str, Path]) -> tuple[dict[str, list[float]], dict[str, list],
                                                                       dict[str, int]]:
    """Ceiling samples (GOP/s) per kernel, per runtime one LayerProfile per round, and each file's class count."""
    from deploy.bench.timing import BenchConfig, measure
    from deploy.inputs import random_batch
    from deploy.layers.capture import load_graph
    from deploy.layers.profile import profile_layers
    from runtimes.options import RuntimeOptions

    kernels = {name: k for (name, precision), k in _gemm_kernels(args.threads).items()
               if precision == "int8" and "MatMul" in name}
    graphs = {rt: load_graph(path) for rt, path in rows.items()}
    x = random_batch((3, 227, 227), args.batch)
    options = RuntimeOptions(threads=args.threads)
    config = BenchConfig(warmup_iters=3, duration_s=args.duration, rounds=1)
    timer = lambda runtime, feeds: statistics.median(measure(runtime, feeds, config).host_ms)  # noqa: E731
    ceilings: dict[str, list[float]] = {name: [] for name in kernels}
    samples: dict[str, list] = {rt: [] for rt in rows}
    for r in range(args.rounds):
        for name, kernel in kernels.items():
            ceilings[name].append(_time_gemm(kernel))
        for rt, graph in graphs.items():
            profile = profile_layers(rt, graph.info, graph.layer_map, None, options, x, args.batch, timer)
            if not profile.available:
                sys.exit(f"int8_bound: {rt}: no profile ({profile.reason})")
            samples[rt].append(profile)
        print(f"round {r + 1}/{args.rounds}: " + ", ".join(
            f"{rt} {samples[rt][-1].measured_ms:.1f} ms" for rt in rows), file=sys.stderr, flush=True)
    classes = {rt: graph.info.outputs[0].shape[-1] or 1000 for rt, graph in graphs.items()}
    return ceilings, samples, classes


def _report(args, rows: dict[str, Path], ceilings: dict[str, list[float]], samples: dict[str, list],
            classes: dict[str, int], targets: dict[str, float]) -> None:
    b = args.batch
    rates = {name: statistics.median(v) for name, v in ceilings.items()}
    ceiling_gops = max(rates.values())
    c = ceiling_gops / GFLOP_PER_IMAGE
    print(f"\nint8 GEMM ceiling, {args.threads} threads, median of {args.rounds} rounds: " + ", ".join(
        f"{name} {rate:.0f} GOP/s (over rounds {min(ceilings[name]):.0f}-{max(ceilings[name]):.0f})"
        for name, rate in rates.items()) + f" → **{c:.0f} img/s** at {GFLOP_PER_IMAGE} GOP per image\n")
    print(f"| runtime (file) | b{b} ms end to end | img/s (% of ceiling) | profiled ms | GEMM layers ms | "
          "other layers ms (of which reorders) | fastest GEMM layer GOP/s | share with free other layers | s_max | "
          "target | GEMM rate the target needs |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    for rt, path in rows.items():
        profiles = samples[rt]
        macs = layer_macs(classes[rt])  # its keys are the layers that run on GEMM kernels
        wall = statistics.median(p.measured_ms for p in profiles)
        per_layer = {t.layer: statistics.median(_layer(p, t.layer).ms for p in profiles) for t in profiles[0].layers}
        layout = {t.layer: statistics.median(_layer(p, t.layer).layout_ms for p in profiles)
                  for t in profiles[0].layers}
        gemm = sum(per_layer[name] for name in macs)
        other = sum(ms for name, ms in per_layer.items() if name not in macs)
        other_layout = sum(ms for name, ms in layout.items() if name not in macs)
        fastest = max((2 * macs[name] * b / 1e9) / (per_layer[name] / 1e3) for name in macs if per_layer[name] > 0)
        s_max = (b / c * 1e3) / (b / c * 1e3 + other)
        s_gemm = (b / c * 1e3) / gemm  # the GEMM layers as they ran, everything else free
        target = targets.get(rt)
        need = _needed(b, c, target, other, sum(macs.values()))
        print(f"| {rt} ({path.name}) | {wall:.1f} | {b / wall * 1e3:.0f} ({b / wall * 1e3 / c:.0%}) | "
              f"{gemm + other:.1f} | {gemm:.1f} | {other:.1f} ({other_layout:.1f}) | {fastest:.0f} | {s_gemm:.0%} | "
              f"{s_max:.0%} | "
              f"{'—' if target is None else f'{target:.0%}'} | {need} |")
    print("\nPer layer (ms, median over rounds):\n")
    print("| layer | " + " | ".join(rows) + " |\n|---|" + "---:|" * len(rows))
    for t in samples[next(iter(rows))][0].layers:
        print(f"| {t.layer} | " + " | ".join(
            f"{statistics.median(_layer(p, t.layer).ms for p in samples[rt]):.2f}" for rt in rows) + " |")


def _needed(b: int, c: float, target: float | None, other_ms: float, macs_per_image: int) -> str:
    if target is None:
        return "—"
    budget = b / (target * c) * 1e3 - other_ms
    if budget <= 0:
        return f"impossible: the other layers alone take more than the {b / (target * c) * 1e3:.1f} ms allowed"
    rate = 2 * macs_per_image * b / 1e9 / (budget / 1e3)
    return f"{rate:.0f} GOP/s in {budget:.1f} ms ({rate / (c * GFLOP_PER_IMAGE):.2f}× the ceiling)"


def _layer(profile, name: str):
    return next(t for t in profile.layers if t.layer == name)


if __name__ == "__main__":
    main()
