"""int8 recipes side by side: each one's accuracy and speed on OpenVINO and ONNX Runtime, benchmark_app on the same
files, and the int8 GEMM ceiling measured in the same rounds.

    flock /tmp/alexnet-cpu.lock .venv/bin/python benchmarks/int8.py [--checkpoint runs/demo/train] [--rounds 5]
        [--duration 1.5] [--batch-sizes 32,1] [--calibration-data DIR] [--methods minmax,entropy,percentile]

Recipes, each in both LRN forms (``native``: the OpenVINO/TensorRT file; ``conv``: the ONNX Runtime file):

* ``before``: the export's int8 before the accuracy-aware search, rebuilt here: onnxruntime.quantization's
  ``quantize_static`` on Conv/Gemm, symmetric int8, per-channel, MinMax on 128 calibration images, fc8 fp32.
* one per calibration method: ``export_onnx(..., calibration_methods=(method,))``, i.e. the new Q/DQ placement and
  that method's ranges on as many images as they needed (with the search's fallback if the budget asks for it).
* ``auto``: which of those the default export chooses is read from its report (no extra file).

Accuracy: top-1 on the checkpoint's validation images (never the calibration images) on both runtimes, against
PyTorch fp32 on the same images. Speed: the toolkit's adapters through ``deploy.bench.timing`` (OpenVINO on every
file, ONNX Runtime on the conv-form files), each round followed by ``benchmark_app -hint latency`` on the same file
and batch and by the int8 GEMM kernels (OpenVINO MatMul with a u8 FakeQuantize, ONNX Runtime MatMulInteger; 4096^3;
the ceiling is the faster, in img/s at 1.4488 GOP per image). img/s: batch / mean call time with its 95 % interval
(deploy/bench/stats.py, rounds resampled); ceilings and benchmark_app: median over rounds and (max - min) / median.
"""
from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.cpu_runtimes import GFLOP_PER_IMAGE, _benchmark_app, _gemm_kernels, _sample, _time_gemm  # noqa: E402

FORMS = ("native", "conv")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--checkpoint", type=Path, default=Path("runs/demo/train"), help="run folder")
    parser.add_argument("--calibration-data", type=Path, help="calibration image folder (default: training images)")
    parser.add_argument("--methods", default="minmax,entropy,percentile", help="calibration methods to export")
    parser.add_argument("--max-accuracy-drop", type=float, default=None, help="the exports' budget (points)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--duration", type=float, default=1.5, help="timed seconds per cell per round")
    parser.add_argument("--batch-sizes", default="32,1")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--quiet-wait", type=float, default=10.0, help="wait up to this long for a quiet CPU")
    parser.add_argument("--out", type=Path, help="keep the files here (and reuse those already there)")
    args = parser.parse_args()
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
    with contextlib.nullcontext(args.out) if args.out else tempfile.TemporaryDirectory(prefix="int8-bench-") as d:
        files, reports = _build(args, Path(d))
        accuracy = _accuracy(args.checkpoint, files)
        samples = _time(args, files)
        _report(args, files, reports, accuracy, samples)


def _build(args: argparse.Namespace, folder: Path) -> tuple[dict[tuple[str, str], Path], dict]:
    """Every recipe's file, keyed (recipe, form); the exports' int8 reports by (method, form)."""
    import json

    from export.exporter import export_onnx
    from export.int8_search import Int8BudgetError
    from export.spec import ExportSpec

    files, reports = {}, {}
    for form in FORMS:
        files["before", form] = _before_recipe(args.checkpoint, folder / f"before-{form}.onnx", form,
                                               args.calibration_data)
        for method in args.methods.split(","):
            path = folder / f"{method}-{form}.onnx"
            if not path.is_file():
                print(f"exporting {method} {form}", file=sys.stderr, flush=True)
                try:
                    result = export_onnx(args.checkpoint, path, ExportSpec(precision="int8", lrn=form,
                                                                           max_accuracy_drop=args.max_accuracy_drop),
                                         calibration_data=args.calibration_data, calibration_methods=(method,))
                except Int8BudgetError as e:  # this method cannot meet the budget with any layer set: say so, go on
                    print(f"{method} {form}: {e}", file=sys.stderr, flush=True)
                    continue
                (folder / f"{method}-{form}.json").write_text(json.dumps(result.quantization))
            reports[method, form] = json.loads((folder / f"{method}-{form}.json").read_text())
            files[method, form] = path
    return files, reports


def _before_recipe(checkpoint: Path, path: Path, form: str, calibration_data: Path | None) -> Path:
    """The int8 recipe this benchmark is measured against (the module docstring's ``before``)."""
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    from export import lrn as lrn_forms
    from export.exporter import _finish_graph, _torch_export
    from export.images import DataSource, calibration_images
    from export.spec import ExportSpec
    from trainer.checkpoint import load_checkpoint

    if path.is_file():
        return path
    ckpt = load_checkpoint(checkpoint)
    proto = lrn_forms.lower_lrn(_torch_export(ckpt.build_model(), ExportSpec()), form)
    keep = lrn_forms.prepare_lrn_for_int8(proto)
    keep += [n.name for n in proto.graph.node if n.output[0] in {o.name for o in proto.graph.output}]
    calib = calibration_images(DataSource.from_checkpoint(ckpt.meta), calibration_data, 128)

    class Reader:
        def __init__(self) -> None:
            self.batches = iter(calib.batches(16))

        def get_next(self):
            batch = next(self.batches, None)
            return None if batch is None else {"input": batch}

    src = path.with_suffix(".fp32.onnx")
    onnx.save(proto, str(src))
    quantize_static(str(src), str(path), Reader(), quant_format=QuantFormat.QDQ, op_types_to_quantize=["Conv", "Gemm"],
                    per_channel=True, activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
                    nodes_to_exclude=keep, calibrate_method=CalibrationMethod.MinMax,
                    extra_options={"ActivationSymmetric": True, "WeightSymmetric": True, "QuantizeBias": False})
    src.unlink()
    model = onnx.load(str(path))
    _finish_graph(model, ExportSpec(precision="int8", lrn=form), ckpt)
    onnx.save(model, str(path))
    return path


def _accuracy(checkpoint: Path, files: dict) -> dict:
    """Top-1 on the validation images, ONNX Runtime and OpenVINO, against PyTorch fp32 on the same images."""
    from export.evaluate import compare, onnx_logits, torch_logits
    from export.images import DataSource, validation_images
    from runtimes.openvino_runtime import OpenVinoRuntime
    from runtimes.ort_runtime import OrtRuntime
    from trainer.checkpoint import load_checkpoint

    ckpt = load_checkpoint(checkpoint)
    images, note = validation_images(DataSource.from_checkpoint(ckpt.meta), None)
    if images is None:
        raise SystemExit(f"no validation images: {note}")
    reference = torch_logits(ckpt.build_model(), images)
    found = {"images": len(images), "fp32": float(np.mean(reference.argmax(1) == images.labels))}
    for key, path in files.items():
        for name, runtime in (("onnxruntime", OrtRuntime(path, threads=2)), ("openvino", OpenVinoRuntime(path))):
            with runtime:
                found[key + (name,)] = compare(reference, onnx_logits(runtime, images, "input", "logits")[0],
                                               images.labels)
    return found


def _time(args: argparse.Namespace, files: dict) -> dict:
    """Interleaved rounds: every toolkit cell, each followed by benchmark_app on the same file and batch, then the
    int8 GEMM kernels."""
    from deploy.bench.timing import BenchConfig, Cell
    from runtimes.openvino_runtime import OpenVinoRuntime
    from runtimes.ort_runtime import OrtRuntime

    batches = [int(b) for b in args.batch_sizes.split(",")]
    x = np.random.default_rng(0).standard_normal((max(batches), 3, 227, 227), dtype=np.float32)
    cells = {}
    for (recipe, form), path in files.items():
        runners = [("openvino", OpenVinoRuntime(path, threads=args.threads, batch_sizes=batches))]
        if form == "conv":
            runners.append(("onnxruntime", OrtRuntime(path, threads=args.threads)))
        for name, runtime in runners:
            runtime.load()
            for batch in batches:
                cells[recipe, form, name, batch] = Cell(runtime, {"input": x[:batch]})
    kernels = {k: v for k, v in _gemm_kernels(args.threads).items() if k[1] == "int8" and "conv" not in k[0]}
    samples: dict = defaultdict(list)
    config = BenchConfig(warmup_iters=2, duration_s=args.duration, min_iterations=3, rounds=1)
    started = time.time()
    for r in range(args.rounds):
        for key, cell in cells.items():
            _sample(samples, args.quiet_wait, key, _one_round, cell, config)
            if key[2] == "openvino":
                _sample(samples, args.quiet_wait, key[:2] + ("bapp", key[3]), _benchmark_app,
                        files[key[:2]], key[3], "", args)
        for name, kernel in kernels.items():
            _sample(samples, args.quiet_wait, ("gemm", name[0]), _time_gemm, kernel)
        print(f"round {r + 1}/{args.rounds} done ({time.time() - started:.0f} s)", file=sys.stderr, flush=True)
    return samples


def _one_round(cell, config):
    from deploy.bench.timing import measure_interleaved

    return measure_interleaved([cell], config)[0]


def _throughput(measurements: list, batch: int) -> tuple[float, tuple[float, float] | None]:
    from deploy.bench.stats import throughput_ci

    rounds = [m.rounds_ms[0] for m, _ in measurements]
    mean_ms = statistics.mean(v for r in rounds for v in r)
    return batch * 1e3 / mean_ms, throughput_ci(rounds, batch)


def _spread(values: list[float]) -> str:
    mid = statistics.median(values)
    return f"{mid:.0f} ±{(max(values) - min(values)) / mid:.0%}"


def _report(args, files: dict, reports: dict, accuracy: dict, samples: dict) -> None:
    from core.load import BUSY_SHARE

    gemm = {k[1]: [v for v, _ in pairs] for k, pairs in samples.items() if k[0] == "gemm"}
    ceiling = max(statistics.median(v) for v in gemm.values()) / GFLOP_PER_IMAGE
    foreign = [f for pairs in samples.values() for _, f in pairs]
    print(f"\n{args.rounds} rounds x {args.duration:g} s per cell, {args.threads} threads; "
          f"{sum(f < BUSY_SHARE for f in foreign)} of {len(foreign)} samples with other processes under "
          f"{BUSY_SHARE:.0%} of the CPUs. Validation: {accuracy['images']} images, PyTorch fp32 "
          f"{accuracy['fp32']:.2%}.\n")
    print("| int8 GEMM kernel (4096^3) | GOP/s | img/s |\n|---|---:|---:|")
    for name, values in gemm.items():
        print(f"| {name} | {_spread(values)} | {statistics.median(values) / GFLOP_PER_IMAGE:.0f} |")
    print(f"\nint8 ceiling: {ceiling:.0f} img/s\n")
    print("| recipe | LRN | layers fp32 | calib. images | top-1 ORT / OV (drop) | runtime | batch | img/s [95 % CI] "
          "| ms (b1) | % of ceiling | benchmark_app img/s | toolkit / bapp |")
    print("|---|---|---|---:|---|---|---:|---:|---:|---:|---:|---:|")
    for key in sorted({k[:4] for k in samples if k[0] != "gemm" and k[2] != "bapp"}):
        recipe, form, runtime, batch = key
        img_s, ci = _throughput(samples[key], batch)
        ms = statistics.median(v for m, _ in samples[key] for v in m.rounds_ms[0])
        ort, ov = accuracy[recipe, form, "onnxruntime"], accuracy[recipe, form, "openvino"]
        q = reports.get((recipe, form))
        layers = [*(f"conv{i}" for i in range(1, 6)), *(("lrn1", "lrn2") if form == "conv" else ()), "fc6", "fc7",
                  "fc8"]
        kept = "fc8" if q is None else (", ".join(n for n in layers if n not in q["int8_layers"]) or "—")
        calib = "128" if q is None else str(q["calibration"]["images"][q["method"]])
        bapp = [v for v, _ in samples.get((recipe, form, "bapp", batch), [])]
        ratio = f"{img_s / statistics.median(bapp):.2f}" if bapp and runtime == "openvino" else "—"
        interval = f" [{ci[0]:.0f}–{ci[1]:.0f}]" if ci else ""
        print(f"| {recipe} | {form} | {kept} | {calib} | {ort.accuracy:.2%} / {ov.accuracy:.2%} "
              f"({ort.drop_points:+.2f} / {ov.drop_points:+.2f}) | {runtime} | {batch} | {img_s:.0f}{interval} | "
              f"{ms:.2f} | {img_s / ceiling:.0%} | {_spread(bapp) if bapp and runtime == 'openvino' else '—'} | "
              f"{ratio} |")
    auto = {form: min((m for m, f in reports if f == form), key=lambda m: (
        reports[m, form]["result"]["drop_points"], len(reports[m, form]["kept_fp32"]),
        args.methods.split(",").index(m))) for form in FORMS if any(f == form for _, f in reports)}
    print("\nLowest drop per form (then fewer fp32 layers, MinMax first; the default export also weighs parity): "
          + "; ".join(f"{form}: {method}" for form, method in auto.items()))


if __name__ == "__main__":
    main()
