"""The GPU check: the `gpu`-marked tests, then a bench of torch, onnxruntime-cuda and TensorRT at batch 1/32/256 on an
fp32 and an fp16 export (each runtime on its own LRN form), summarised against the GPU targets.

    python scripts/gpu_check.py OUT [--checkpoint RUN]     (scripts/gpu_check.sh OUT sets up PYTHONPATH and runs this)

Honest by construction: on a machine without a CUDA GPU it says so and exits 3 having claimed nothing; a skipped test
is reported as skipped, never as passed; a runtime that did not run is "not measured". OUT receives only small files
(at most 6: summary.txt, summary.json, env.log, pytest_gpu.log, bench.log, bench.json); the checkpoint, the ONNX files
and the engines go to a temporary folder that is removed at the end. Every step runs in a subprocess with a timeout
below the 600 s a lent device allows one command, and the whole check is sized for < 8 minutes on an H100/H200.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
EXIT_UNAVAILABLE = 3
STEP_TIMEOUT_S = {"env": 120, "tests": 240, "bench": 420}  # each < 600 s; together < 8 minutes with margin
BATCHES = (1, 32, 256)
RUNTIMES = ("torch", "onnxruntime-cuda", "tensorrt")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path, help="folder for the summary and logs (small files only)")
    parser.add_argument("--checkpoint", default=None, help="run folder or .safetensors (default: random weights)")
    parser.add_argument("--duration", type=float, default=1.5, help="timed seconds per runtime and batch size")
    args = parser.parse_args(argv)
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    log = _Log(out / "summary.txt")
    env = _step("env", [sys.executable, __file__, "--probe"], out / "env.log", log)
    probe = _last_json(out / "env.log")
    if env != 0:  # e.g. torch not importable by this interpreter: say that, not "no GPU"
        log(f"the environment probe failed ({_last_line(out / 'env.log')}; see env.log): nothing was checked")
        _write_json(out / "summary.json", {"status": "probe failed", "environment": probe})
        return EXIT_UNAVAILABLE
    if not probe.get("cuda"):
        log(f"no CUDA GPU here ({probe.get('cuda_reason')}): nothing was checked")
        _write_json(out / "summary.json", {"status": "no gpu", "environment": probe})
        return EXIT_UNAVAILABLE
    log(f"GPU {probe['gpu']}; runtimes: " + ", ".join(f"{n} {'ok' if ok else 'UNAVAILABLE (' + why + ')'}"
                                                    for n, (ok, why) in probe["runtimes"].items()))
    summary = {"environment": probe, "tests": _tests(out, log)}
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as work:
        command = [sys.executable, __file__, "--bench", work, str(out / "bench.json"), str(args.duration)]
        code = _step("bench", command + ([args.checkpoint] if args.checkpoint else []), out / "bench.log", log)
    summary["bench_exit"] = code
    summary["targets"] = _targets(out / "bench.json", log)
    summary["status"] = "checked"
    _write_json(out / "summary.json", summary)
    log(f"done; logs and reports in {out}")
    return 0 if code == 0 and summary["tests"]["failed"] == 0 else 1


class _Log:
    def __init__(self, path: Path) -> None:
        self.path, self.start = path, time.monotonic()
        path.write_text("")

    def __call__(self, text: str) -> None:
        line = f"[gpu_check +{time.monotonic() - self.start:.0f}s] {text}"
        print(line, flush=True)
        with open(self.path, "a") as f:
            f.write(line + "\n")


def _step(name: str, command: list[str], log_path: Path, log: _Log) -> int:
    log(f"{name}: {' '.join(Path(c).name if c.endswith('.py') else c for c in command[1:4])} ...")
    with open(log_path, "w") as f:
        try:
            code = subprocess.run(command, stdout=f, stderr=subprocess.STDOUT, cwd=ROOT,
                                  timeout=STEP_TIMEOUT_S[name]).returncode
        except subprocess.TimeoutExpired:
            code = 124
            f.write(f"\n[gpu_check] {name} stopped after its {STEP_TIMEOUT_S[name]} s limit\n")
    log(f"{name}: exit {code}" + (" (timed out)" if code == 124 else ""))
    return code


def _tests(out: Path, log: _Log) -> dict:
    """pytest -m gpu, counted from its JUnit XML: a skipped test is a skip, not a pass."""
    with tempfile.TemporaryDirectory() as tmp:
        xml = Path(tmp) / "junit.xml"
        code = _step("tests", [sys.executable, "-m", "pytest", "-m", "gpu", "tests", "-q", "-rs", "-p",
                               "no:cacheprovider", f"--junitxml={xml}"], out / "pytest_gpu.log", log)
        cases = ET.parse(xml).getroot().iter("testcase") if xml.is_file() else []
        result = {"exit": code, "passed": 0, "failed": 0, "skipped": 0, "skips": []}
        for case in cases:
            name = f"{case.get('classname')}::{case.get('name')}"
            skip = case.find("skipped")
            if skip is not None:
                result["skipped"] += 1
                result["skips"].append(f"{name}: {skip.get('message', '')}")
            elif case.find("failure") is not None or case.find("error") is not None:
                result["failed"] += 1
            else:
                result["passed"] += 1
    verdict = "FAILED" if result["failed"] or code not in (0, 5) else "passed" if result["passed"] else "NOT RUN"
    log(f"gpu tests: {verdict}: {result['passed']} passed, {result['failed']} failed, {result['skipped']} skipped "
        "(a skipped test is not a pass)")
    for skip in result["skips"]:
        log(f"  skipped {skip}")
    return result


def _targets(bench_json: Path, log: _Log) -> dict:
    """The issue's GPU figures, or "not measured" with the reason."""
    reports = json.loads(bench_json.read_text()) if bench_json.is_file() else {}

    def row(label: str, runtime: str, batch: int) -> dict | None:
        rows = (reports.get(label) or {}).get("results", [])
        return next((r for r in rows if r["runtime"] == runtime and r["batch_size"] == batch), None)

    targets = {}
    trt16, torch32 = row("fp16 native", "tensorrt", 256), row("fp32 conv", "torch", 256)
    targets["trt_fp16_vs_torch_fp32_b256"] = (trt16["throughput"] / torch32["throughput"]
                                              if trt16 and torch32 else "not measured")
    for label in ("fp32 native", "fp16 native"):
        r = row(label, "tensorrt", 1)
        targets[f"trt_{label.split()[0]}_b1_device_p50_ms"] = (
            r["device_latency_ms"]["p50"] if r and r.get("device_latency_ms") else "not measured")
    parity = ((reports.get("fp32 conv") or {}).get("parity") or {}).get("onnxruntime-cuda")
    targets["ort_cuda_fp32_parity_tf32_off"] = ("PASS" if parity and parity["passed"] else
                                                "FAIL" if parity else "not measured")
    for label, report in reports.items():
        for name, why in report.get("skipped", {}).items():
            targets.setdefault("not_measured", []).append(f"{name} ({label}): {why}")
    for key, value in targets.items():
        log(f"target {key}: {value}")
    return targets


def _last_line(path: Path) -> str:
    lines = [line for line in path.read_text(errors="replace").splitlines() if line.strip()] if path.is_file() else []
    return lines[-1].strip() if lines else "no output"


def _write_json(path: Path, obj) -> None:
    path.write_text(json.dumps(obj, indent=2, default=str) + "\n")


def _last_json(path: Path) -> dict:
    for line in reversed(path.read_text().splitlines() if path.is_file() else []):
        if line.startswith("{"):
            return json.loads(line)
    return {}


# ---- the steps' own code, run in subprocesses ----

def probe() -> None:
    """Versions and runtime availability, printed; the last line is the JSON the summary reads."""
    import importlib

    import torch

    for name in ("torch", "onnx", "onnxscript", "onnxruntime", "tensorrt", "pytest", "click", "numpy"):
        try:
            module = importlib.import_module(name)
            print(f"{name} {getattr(module, '__version__', '?')} ({getattr(module, '__file__', '')})")
        except (ImportError, OSError, RuntimeError) as e:  # a missing package or its libraries
            print(f"{name}: NOT importable: {type(e).__name__}: {e}")
    from runtimes.registry import RUNTIME_NAMES, availability

    runtimes = {name: availability(name) for name in RUNTIME_NAMES}
    cuda = torch.cuda.is_available()
    print(json.dumps({"python": sys.version.split()[0], "torch": torch.__version__, "cuda": cuda,
                      "cuda_reason": "" if cuda else "torch.cuda.is_available() is False",
                      "gpu": torch.cuda.get_device_name(0) if cuda else None, "runtimes": runtimes}))


def bench(work: str, out_json: str, duration: float, checkpoint: str | None = None) -> None:
    """Export fp32 and fp16 in both LRN forms, bench each file on the runtimes that prefer its form."""
    from deploy.bench.bench import BenchPlan, run_bench
    from deploy.bench.timing import BenchConfig
    from export.exporter import export_onnx
    from export.spec import ExportSpec
    from runtimes.options import RuntimeOptions
    from runtimes.registry import runtime_class

    ckpt = checkpoint or _random_checkpoint(Path(work) / "run")
    options = RuntimeOptions(device="cuda", engine_cache=str(Path(work) / "engines"), strict=False)
    timing = BenchConfig(warmup_iters=5, warmup_s=0.5, duration_s=duration)
    reports = {}
    for precision in ("fp32", "fp16"):
        for lrn in ("conv", "native"):
            names = tuple(n for n in RUNTIMES if runtime_class(n).preferred_lrn == lrn
                          and (n != "torch" or precision == "fp32"))
            path = Path(work) / f"model.{precision}.{lrn}.onnx"
            export_onnx(ckpt, path, ExportSpec(precision=precision, lrn=lrn), parity_images=0)
            plan = BenchPlan(runtimes=names, batch_sizes=BATCHES, timing=timing, options=options, parity_samples=16,
                             parity_images=0)
            report = run_bench(path, plan, reference=ckpt)
            reports[f"{precision} {lrn}"] = report.to_dict()
            print(f"== {precision} {lrn}: {names}")
            for r in report.results:
                dev = r.device_latency_ms.p50 if r.device_latency_ms else float("nan")
                print(f"  {r.runtime:17} b{r.batch_size:<4} {r.throughput:9.1f} img/s  device p50 {dev:.3f} ms  "
                      f"parity {'PASS' if r.parity and r.parity.passed else 'FAIL'}")
            print(f"  skipped: {report.skipped}  errors: {report.errors}")
    Path(out_json).write_text(json.dumps(reports, indent=2) + "\n")


def _random_checkpoint(folder: Path) -> Path:
    import torch

    from trainer.checkpoint import model_metadata, save_checkpoint
    from trainer.data import IMAGENET_MEAN, IMAGENET_STD
    from trainer.model import AlexNet

    torch.manual_seed(0)
    names = [f"class{i}" for i in range(1000)]
    return save_checkpoint(folder, AlexNet(1000).state_dict(),
                           model_metadata(1000, names, IMAGENET_MEAN, IMAGENET_STD, 0.5))


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    if sys.argv[1:2] == ["--probe"]:
        probe()
    elif sys.argv[1:2] == ["--bench"]:
        bench(*sys.argv[2:4], float(sys.argv[4]), *sys.argv[5:6])
    else:
        sys.exit(main())
