"""Does the regression gate decide on a busy machine? One core kept busy by another process for the whole run.

    .venv/bin/python benchmarks/gate_busy.py MODEL.onnx [--repeats 5] [--batch-size 8] [--duration 2]
        [--slower "--threads 1"] [--no-spinner]

Protocol (the CI a shared runner gives you): with a spinning process on one core throughout,
  1. bench MODEL --runtime onnxruntime --batch-sizes B --json base.json              (the baseline)
  2. the same with the --slower flags and --baseline base.json, REPEATS times        (a slowdown: must exit 1)
  3. the same without them, --baseline base.json, REPEATS times                       (no change: 0 or 4, never 1)
It prints each run's exit code, gate status, p50 ratio and its 95 % interval, and the machine's load as recorded.
Whether the --slower flags slow the run down at all on a busy machine is measured, not assumed: the p50 ratio says.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SPIN = "import time\nwhile True: pass"


def bench(model: Path, args: argparse.Namespace, out: Path, *extra: str) -> tuple[int, dict]:
    cmd = [sys.executable, str(ROOT / "cli.py"), "-q", "bench", str(model), "--runtime", "onnxruntime",
           "--batch-sizes", str(args.batch_size), "--duration", str(args.duration), "--json", str(out), *extra]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=False)
    if not out.is_file():
        sys.exit(f"bench wrote no report (exit {done.returncode}):\n{done.stderr}")
    return done.returncode, json.loads(out.read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", type=Path)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--duration", type=float, default=2.0)
    parser.add_argument("--slower", default="--threads 1", help="bench flags of the slower runs")
    parser.add_argument("--no-spinner", action="store_true", help="measure on the machine as it is")
    args = parser.parse_args()
    spinner = None if args.no_spinner else subprocess.Popen([sys.executable, "-c", SPIN])
    try:
        with tempfile.TemporaryDirectory(prefix="gate-busy-") as tmp:
            base = Path(tmp) / "base.json"
            code, report = bench(args.model, args, base)
            load = report["environment"]["load"]
            print(f"baseline: exit {code}, other processes {load['other_processes_cpu_share']:.0%} of the CPUs, "
                  f"p50 {report['results'][0]['latency_ms']['p50']:.2f} ms\n")
            print("| run | exit | gate | p50 ratio | 95 % interval | other CPU share |")
            print("|---|---:|---|---:|---|---:|")
            for label, extra, allowed in ((args.slower, tuple(args.slower.split()), {1}), ("same", (), {0, 4})):
                for i in range(args.repeats):
                    out = Path(tmp) / f"run-{label}-{i}.json"
                    code, now = bench(args.model, args, out, *extra, "--baseline", str(base))
                    (row,) = now["gate"]["rows"]
                    lo, hi = row["p50_ratio_ci95"] or (float("nan"), float("nan"))
                    share = now["environment"]["load"]["other_processes_cpu_share"]
                    mark = "" if code in allowed else "  ← WRONG"
                    print(f"| {label} #{i + 1} | {code} | {row['status']} | "
                          f"{row['p50_change'] + 1:.3f} | {lo:.3f}–{hi:.3f} | {share:.0%} |{mark}", flush=True)
    finally:
        if spinner is not None:
            spinner.kill()
            spinner.wait()


if __name__ == "__main__":
    main()
