"""The CPU runtimes side by side: OpenVINO next to ONNX Runtime and benchmark_app on the toolkit's own exports, with
this machine's fp32 / bf16 / int8 GEMM ceilings measured in the same run.

    .venv/bin/python benchmarks/cpu_runtimes.py [--checkpoint RUN] [--rounds 5] [--batch-sizes 32,1] [--duration 3]

Exports fp32 and int8 files (LRN as a banded conv and as one LRN node) to a temp folder (``--out`` keeps them) from a
random-init 1000-class AlexNet unless ``--checkpoint``. Each round times every (file, runtime, precision) through the
toolkit's adapters and ``deploy.bench.timing.measure`` (one synchronous call per iteration), each followed by
``benchmark_app`` on the same file, batch and precision, then the ceilings: 4096^3 GEMMs (ORT MLAS / torch /
OpenVINO f32; torch / OpenVINO bf16; ORT MatMulInteger / OpenVINO FakeQuantize+MatMul int8) and, for comparison,
AlexNet's conv3 (3x3, 384 -> 384, 13x13, batch 32) on OpenVINO; a precision's ceiling is its fastest GEMM, in img/s
at 1.4488 GFLOP/img. A cell is batch / mean call time (benchmark_app's "Throughput:" is the same statistic), the
median over the rounds whose sample ran while other processes used < 15 % of the CPUs (each sample first waits up to
--quiet-wait for that), ± the spread (max - min) / median.

benchmark_app: ``-hint latency -shape [B,3,227,227] -t <duration>`` (sync, one request and stream, all cores: what
the toolkit times) ``-infer_precision f32|bf16`` for fp32 files (int8: its default); below all cores ``-hint none -api
sync -nstreams 1 -nthreads T``. ``--throughput-hint`` adds its default async THROUGHPUT run (streams, requests: auto).
"""
from __future__ import annotations

import argparse
import contextlib
import math
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere
from benchmarks.export import FOREIGN_LIMIT, _gflop_per_image  # noqa: E402  (needs the path above)

GFLOP_PER_IMAGE = round(_gflop_per_image(1000), 4)  # AlexNet forward at 227x227, 1000 classes: 1.4488

GEMM_N = 4096
FILES = {"fp32-conv": ("fp32", "conv"), "fp32-native": ("fp32", "native"),
         "int8-conv": ("int8", "conv"), "int8-native": ("int8", "native")}
# (column, runtime, precision option, benchmark_app -infer_precision) per file precision
COLUMNS = {"fp32": [("onnxruntime", "ort", None, None), ("openvino f32", "ov", None, "f32"),
                    ("openvino bf16", "ov", "bf16", "bf16")],
           "int8": [("onnxruntime", "ort", None, None), ("openvino int8", "ov", None, "")]}
HEADERS = ["onnxruntime", "openvino f32", "openvino bf16", "openvino int8"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--checkpoint", type=Path, help="run folder or .safetensors (default: random 1000-class)")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds; cells are medians over them")
    parser.add_argument("--batch-sizes", default="32,1", help="comma-separated batch sizes")
    parser.add_argument("--duration", type=float, default=3.0, help="timed seconds per cell per round (both tools)")
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)), help="inference threads")
    parser.add_argument("--files", default=",".join(FILES), help=f"comma-separated subset of {', '.join(FILES)}")
    parser.add_argument("--throughput-hint", action="store_true",
                        help="also run benchmark_app with its default THROUGHPUT hint (async, parallel requests)")
    parser.add_argument("--quiet-wait", type=float, default=10.0,
                        help="before each sample, wait up to this many seconds for other processes to go quiet")
    parser.add_argument("--out", type=Path, help="keep the exported files here (and reuse the ones already there)")
    args = parser.parse_args()
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
    with contextlib.nullcontext(args.out) if args.out else tempfile.TemporaryDirectory(prefix="openvino-bench-") as d:
        _run(args, Path(d))  # the temp folder (about 0.7 GB of ONNX files) is removed afterwards


def _run(args: argparse.Namespace, workdir: Path) -> None:
    from runtimes.openvino_runtime import OpenVinoRuntime
    from runtimes.ort_runtime import OrtRuntime

    files = _export(args.checkpoint, workdir, args.files.split(","))
    batches = [int(b) for b in args.batch_sizes.split(",")]
    runtimes = {}
    for name, path in files.items():
        for column, kind, precision, _ in COLUMNS[FILES[name][0]]:
            runtimes[name, column] = rt = (OrtRuntime(path, threads=args.threads) if kind == "ort" else
                                           OpenVinoRuntime(path, threads=args.threads, precision=precision))
            rt.load()
    gemms = _gemm_kernels(args.threads)
    x = np.random.default_rng(0).standard_normal((max(batches), 3, 227, 227), dtype=np.float32)
    samples: dict[tuple, list[tuple[float, float]]] = defaultdict(list)  # key -> [(value, foreign CPU share)]
    started = time.time()
    for r in range(args.rounds):
        for batch in batches:
            _time_round(runtimes, files, {"input": x[:batch]}, args, samples)
        for (name, precision), kernel in gemms.items():
            _sample(samples, args.quiet_wait, ("gemm", name, precision), _time_gemm, kernel)
        print(f"round {r + 1}/{args.rounds} done ({time.time() - started:.0f} s)", file=sys.stderr, flush=True)
    info = {f"{name} {column[9:]}": rt.describe() for (name, column), rt in runtimes.items()
            if column.startswith("openvino")}
    for rt in runtimes.values():
        rt.close()
    _report(files, batches, samples, args, info)


def _sample(samples: dict, quiet_wait_s: float, key: tuple | None, measure: Callable, *args) -> None:
    """Wait (up to ``quiet_wait_s``) for other processes to leave the CPUs, run ``measure(*args)`` and store its value
    under ``key`` (None: it returns a dict of them) with the share of the CPUs other processes used meanwhile."""
    from core.load import LoadWindow, wait_for_quiet

    wait_for_quiet(quiet_wait_s, FOREIGN_LIMIT)
    with LoadWindow() as load:
        values = measure(*args) if key is None else {key: measure(*args)}
    for name, value in values.items():
        samples[name].append((value, load.foreign))


def _export(checkpoint: Path | None, workdir: Path, names: list[str]) -> dict[str, Path]:
    """The toolkit's exports (a file already in ``workdir`` is reused); parity misses of random weights are kept."""
    from benchmarks.export import _lenient, _random_checkpoint
    from export.errors import ParityError
    from export.int8_search import Int8BudgetError
    from export.exporter import export_onnx
    from export.spec import ExportSpec

    if set(names) - set(FILES):
        raise SystemExit(f"unknown --files {', '.join(sorted(set(names) - set(FILES)))}; expected {', '.join(FILES)}")
    if checkpoint is None:
        checkpoint = workdir / "random-1000"
        if not checkpoint.is_dir():
            _random_checkpoint(checkpoint)
    files = {}
    for name in names:
        precision, lrn = FILES[name]
        path = files[name] = workdir / f"{name}.onnx"
        if path.is_file():
            continue
        print(f"exporting {name}", file=sys.stderr, flush=True)
        try:
            export_onnx(checkpoint, path, ExportSpec(precision=precision, lrn=lrn), parity_images=32)
        except (ParityError, Int8BudgetError):  # random weights can miss the int8 gates; time the graph anyway
            export_onnx(checkpoint, path, ExportSpec(precision=precision, lrn=lrn, tolerance=_lenient(),
                                                     max_accuracy_drop=100.0), parity_images=32)
    return files


def _time_round(runtimes: dict, files: dict[str, Path], feeds: dict, args: argparse.Namespace,
                samples: dict) -> None:
    """One round at one batch size: each adapter cell, each followed by benchmark_app on the same file, batch and
    precision (so a ratio's two sides see the same machine)."""
    from deploy.bench.timing import BenchConfig, measure

    batch = len(feeds["input"])
    config = BenchConfig(warmup_iters=2, duration_s=args.duration, min_iterations=3)

    def toolkit(name: str, column: str) -> dict[tuple, float]:
        host_ms = measure(runtimes[name, column], feeds, config).host_ms
        return {(name, column, batch): batch * 1e3 / statistics.mean(host_ms),
                (name, column, batch, "ms"): statistics.median(host_ms)}

    for name, path in files.items():
        for column, _, _, precision in COLUMNS[FILES[name][0]]:
            _sample(samples, args.quiet_wait, None, toolkit, name, column)
            if precision is not None:
                _sample(samples, args.quiet_wait, (name, column, batch, "bapp"), _benchmark_app, path, batch,
                        precision, args)
        if args.throughput_hint:
            _sample(samples, args.quiet_wait, (name, "tput", batch, "bapp"), _benchmark_app, path, batch, None, args)


def _benchmark_app(path: Path, batch: int, precision: str | None, args: argparse.Namespace) -> float:
    """benchmark_app's "Throughput:" (img/s) on ``path`` at ``batch``; ``precision`` None = its THROUGHPUT hint."""
    exe = shutil.which("benchmark_app", path=str(Path(sys.executable).parent)) or "benchmark_app"
    cmd = [exe, "-m", str(path), "-d", "CPU", "-shape", f"[{batch},3,227,227]", "-t", str(math.ceil(args.duration))]
    cmd += (["-hint", "throughput"] if precision is None else ["-hint", "latency"]
            if args.threads == len(os.sched_getaffinity(0)) else
            ["-hint", "none", "-api", "sync", "-nstreams", "1", "-nthreads", str(args.threads)])
    cmd += ["-infer_precision", precision] if precision else []
    out = subprocess.run(cmd, capture_output=True, text=True, check=False).stdout
    found = re.search(r"Throughput:\s+([\d.]+) FPS", out)
    if found is None:
        raise SystemExit(f"benchmark_app printed no Throughput line: {' '.join(cmd)}\n{out[-2000:]}")
    return float(found.group(1))


def _gemm_kernels(threads: int) -> dict[tuple[str, str], tuple[Callable[[], object], float]]:
    """(call, GFLOP per call) by (name, precision): the 4096^3 GEMMs the ceilings are taken from, and AlexNet's conv3
    at batch 32 on OpenVINO for comparison (its brgemm convolutions can outrun its GEMM)."""
    import torch

    from benchmarks.gemm_peak import ort_matmul

    torch.set_num_threads(threads)
    rng = np.random.default_rng(0)
    a, b = (rng.standard_normal((GEMM_N, GEMM_N), dtype=np.float32) for _ in range(2))
    ta, tb = torch.from_numpy(a), torch.from_numpy(b)
    ba, bb = ta.bfloat16(), tb.bfloat16()
    qa = rng.integers(0, 256, (GEMM_N, GEMM_N), dtype=np.uint8)
    qb = rng.integers(-127, 128, (GEMM_N, GEMM_N), dtype=np.int8)
    ort_f32, ort_int8 = ort_matmul(b, threads), ort_matmul(qb, threads)
    gemm = 2 * GEMM_N**3 / 1e9
    kernels = {("ONNX Runtime MatMul f32", "fp32"): (lambda: ort_f32(a), gemm),
               ("torch mm f32", "fp32"): (lambda: ta @ tb, gemm), ("torch mm bf16", "bf16"): (lambda: ba @ bb, gemm),
               ("ONNX Runtime MatMulInteger u8 x s8", "int8"): (lambda: ort_int8(qa), gemm)}
    x = np.abs(rng.standard_normal((32, 384, 13, 13), dtype=np.float32))
    conv_w = rng.integers(-127, 128, (384, 384, 3, 3), dtype=np.int8)
    for precision, hint in (("fp32", "f32"), ("bf16", "bf16"), ("int8", "int8")):
        kernels[f"OpenVINO MatMul {hint}", precision] = (_ov_kernel(np.abs(a), qb if hint == "int8" else b, hint,
                                                                    threads), gemm)
        kernels[f"OpenVINO conv3 3x3 b32 {hint}", precision] = (
            _ov_kernel(x, conv_w if hint == "int8" else conv_w.astype(np.float32), hint, threads),
            2 * 32 * 13 * 13 * 384 * 384 * 9 / 1e9)
    return kernels


def _ov_kernel(x: np.ndarray, w: np.ndarray, precision: str, threads: int) -> Callable[[], object]:
    """``x @ w`` (2-D ``w``, a FullyConnected like the fc layers) or a 3x3 convolution (4-D ``w``) on OpenVINO with
    ``w`` constant. int8: ``x`` through a u8 FakeQuantize and int8 ``w`` with per-output-channel scales, which
    OpenVINO's LPT runs as u8 x s8."""
    import openvino as ov
    import openvino.opset13 as ops

    from runtimes.openvino_runtime import shared_core

    param = ops.parameter(list(x.shape), np.float32, name="x")
    data, weights = param, ops.constant(w)
    config = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_NUM_THREADS": threads}
    if precision == "int8":
        low, high = ops.constant(np.float32(0.0)), ops.constant(np.float32(4.0))
        data = ops.fake_quantize(param, low, high, low, high, 256)
        scale = np.full((1, w.shape[1]) if w.ndim == 2 else (w.shape[0], 1, 1, 1), 0.01, np.float32)
        weights = ops.multiply(ops.convert(weights, "f32"), ops.constant(scale))
    else:
        config["INFERENCE_PRECISION_HINT"] = precision
    out = (ops.matmul(data, weights, False, False) if w.ndim == 2 else
           ops.convolution(data, weights, [1, 1], [1, 1], [1, 1], [1, 1]))
    request = shared_core().compile_model(ov.Model([out], [param]), "CPU", config).create_infer_request()
    request.set_input_tensor(ov.Tensor(x, shared_memory=True))  # the closure below keeps ``x`` alive
    return lambda: (request.infer(), x)


def _time_gemm(kernel: tuple[Callable[[], object], float]) -> float:
    """GFLOP/s (GOP/s for int8) of the median of 3 calls."""
    times = []
    for _ in range(3):
        start = time.perf_counter()
        kernel[0]()
        times.append(time.perf_counter() - start)
    return kernel[1] / statistics.median(times)


def _quiet(pairs: list[tuple[float, float]]) -> list[float]:
    """The values sampled while other processes used under FOREIGN_LIMIT of the CPUs; all of them if none was."""
    return [v for v, foreign in pairs if foreign < FOREIGN_LIMIT] or [v for v, _ in pairs]


def _cell(pairs: list[tuple[float, float]] | None) -> str:
    """Median of the quiet samples ± their spread (max - min) / median; † = no sample was quiet."""
    if not pairs:
        return "—"
    values = _quiet(pairs)
    mid = statistics.median(values)
    return f"{mid:.0f} ±{(max(values) - min(values)) / mid:.0%}" + ("†" * all(f >= FOREIGN_LIMIT for _, f in pairs))


def _report(files: dict, batches: list[int], samples: dict, args: argparse.Namespace, info: dict) -> None:
    med = {k: statistics.median(_quiet(v)) for k, v in samples.items()}
    extra = ["benchmark_app tput hint"] if args.throughput_hint else []
    foreign = [f for pairs in samples.values() for _, f in pairs]
    print(f"\n{args.threads} threads, {args.rounds} interleaved rounds, {args.duration:g} s per cell. img/s = batch / "
          f"mean call time: the median of the samples taken while other processes used < {FOREIGN_LIMIT:.0%} of the "
          "CPUs (of all where none was: †) ± their spread; b1 cells add the median latency. "
          f"{sum(f < FOREIGN_LIMIT for f in foreign)} of {len(foreign)} samples were quiet; other processes used "
          f"{statistics.median(foreign):.0%} of the CPUs in the median sample\n")
    print("| file | batch | " + " | ".join(HEADERS) + " | benchmark_app -hint latency (same precision) | toolkit / "
          "benchmark_app | " + "".join(f"{e} |" for e in extra))
    print("|---|---:|" + "---:|" * (len(HEADERS) + 2 + len(extra)))
    for name in files:
        columns = [c[0] for c in COLUMNS[FILES[name][0]]]
        for batch in batches:
            cells = []
            for header in HEADERS:
                cell = _cell(samples.get((name, header, batch)))
                if header in columns and batch == 1:
                    cell += f"; {med[name, header, batch, 'ms']:.1f} ms"
                cells.append(cell if header in columns else "—")
            ov_columns = [c for c in columns if c.startswith("openvino")]
            bapp = " / ".join(f"{c[9:]} {_cell(samples[name, c, batch, 'bapp'])}" for c in ov_columns)
            ratio = " / ".join(f"{med[name, c, batch] / med[name, c, batch, 'bapp']:.2f}" for c in ov_columns)
            tput = [_cell(samples.get((name, "tput", batch, "bapp")))] if extra else []
            print(f"| {name} | {batch} | " + " | ".join(cells + [bapp, ratio] + tput) + " |")
    ceilings = _report_gemms(samples)
    _report_targets(files, batches, med, ceilings)
    print(f"\nOpenVINO {next(iter(info.values()))['openvino']} as compiled (last batch): " + "; ".join(
        f"{name}: {d['inference_precision']}, {d['streams']} stream, {d['threads']} threads, {d['performance_hint']}"
        for name, d in info.items()))


def _report_gemms(samples: dict) -> dict[str, float]:
    """Print the GEMM table; returns each precision's ceiling in img/s (its fastest kernel's median)."""
    print(f"\n| kernel ({GEMM_N}^3 GEMM; conv3: not a ceiling) | GFLOP/s (GOP/s int8) | "
          f"img/s at {GFLOP_PER_IMAGE} GFLOP |\n|---|---:|---:|")
    ceilings: dict[str, float] = {}
    for (_, name, precision), pairs in ((k, v) for k, v in samples.items() if k[0] == "gemm"):
        rate = statistics.median(_quiet(pairs))
        if "conv" not in name:  # the ceilings are GEMMs; a conv is shown for comparison only
            ceilings[precision] = max(ceilings.get(precision, 0.0), rate / GFLOP_PER_IMAGE)
        print(f"| {name} | {_cell(pairs)} | {rate / GFLOP_PER_IMAGE:.0f} |")
    return ceilings


def _report_targets(files: dict, batches: list[int], med: dict, ceilings: dict[str, float]) -> None:
    """The ratios the targets are set on, at the largest batch."""
    b = max(batches)
    print(f"\nTargets at batch {b} (ceilings img/s: {', '.join(f'{p} {c:.0f}' for p, c in ceilings.items())})\n")
    lines, int8 = [], [n for n in files if n.startswith("int8")]
    for name in files:
        if name in int8:
            ov = med[name, "openvino int8", b]
            lines += [f"openvino / onnxruntime int8, {name}: {ov / med[name, 'onnxruntime', b]:.2f} (target >= 1.4)",
                      f"openvino int8 / int8 ceiling, {name}: {ov / ceilings['int8']:.2f} (moonshot 0.9)"]
        else:
            lines.append(f"openvino bf16 / bf16 ceiling, {name}: {med[name, 'openvino bf16', b] / ceilings['bf16']:.2f}"
                         " (target >= 0.90)")
    if int8:
        best = max(med[n, "openvino int8", b] for n in int8) / max(med[n, "onnxruntime", b] for n in int8)
        lines.append(f"openvino / onnxruntime int8, each on its fastest file: {best:.2f} (target >= 1.4)")
    worst = min((med[k] / med[k + ("bapp",)], k) for k in med if len(k) == 3 and k + ("bapp",) in med)
    lines.append(f"toolkit openvino / benchmark_app, lowest cell ({', '.join(map(str, worst[1]))}): {worst[0]:.2f} "
                 "(target >= 0.95)")
    print("\n".join(f"- {line}" for line in lines))


if __name__ == "__main__":
    main()
