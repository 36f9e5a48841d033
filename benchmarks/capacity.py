"""Capacity at a latency SLO on this machine, against the plainest serving loop, in one run (MLPerf LoadGen).

    flock /tmp/alexnet-cpu.lock .venv/bin/python benchmarks/capacity.py [--onnx-dir runs/demo/onnx] [--out DIR]
        [--slo-ms 50] [--low-slo-ms 15] [--duration 5] [--tail-share 0.005] [--low-tail-share 0.0025]
        [--max-trials 6] [--max-run 30]

1. ``run_capacity`` (what ``cli.py capacity`` runs) on the fp32 and int8 files of ``--onnx-dir`` with ONNX Runtime
   and OpenVINO (each on its own LRN form) at ``--slo-ms``: Server search, Offline and SingleStream.
2. The plain loop on the same int8 files: one ONNX Runtime session with every core, one thread that runs whatever is
   queued (up to 32) as one batch, no batcher, no executors. Its Server QPS at the same SLO is bisected the same way
   (LoadGen, the same run sizing), and it gets an Offline run.
3. ``run_capacity`` on the int8 files at ``--low-slo-ms`` (Server only); if nothing meets it, the next SLO of
   LOWER_SLOS that something meets: the smallest this machine meets, measured.

Prints, and writes into OUT/benchmark.json: the recommended Server QPS ÷ the plain loop's (target >= 1.3), every row's
probe above its answer (target <= 1.15x the answer, and it failed), the best runtime's Server QPS ÷ its own Offline
samples/s (target >= 0.85) and the low-SLO answer. Every LoadGen log stays under OUT (default: a temp folder, removed).
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import queue
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

LOWER_SLOS = (20.0, 25.0, 30.0, 40.0)  # tried in turn when --low-slo-ms has no valid answer
PLAIN_MAX_BATCH = 32


class PlainLoop:
    """The loop a user would write first: a queue, one thread, one session with every core, whatever is queued (up
    to 32) run as one batch. The same interface as deploy.serving.server.Server for run_trial."""

    def __init__(self, session, respond) -> None:
        from deploy.serving.server import ServerStats

        self.session, self.respond, self.stats = session, respond, ServerStats()
        self.input = session.get_inputs()[0].name
        self.queue: queue.Queue = queue.Queue()
        self.aborted = False
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.thread.start()

    def submit(self, items) -> None:
        for item in items:
            self.queue.put((item, time.perf_counter()))

    def _loop(self) -> None:
        from deploy.serving.server import Response

        while True:
            first = self.queue.get()
            if first is None:
                return
            items = [first]
            with contextlib.suppress(queue.Empty):
                while len(items) < PLAIN_MAX_BATCH:
                    nxt = self.queue.get_nowait()
                    if nxt is None:
                        self.queue.put(None)
                        break
                    items.append(nxt)
            taken = time.perf_counter()
            out = None
            if not self.aborted:
                out = self.session.run(None, {self.input: np.stack([data for (_, data), _ in items])})[0]
            done = time.perf_counter()
            error = RuntimeError("aborted") if out is None else None
            responses = [Response(key, None if out is None else out[i], error, taken - t, done - t, len(items))
                         for i, ((key, _), t) in enumerate(items)]
            self.stats.add(responses, batch=True)
            self.respond(responses)

    def abort(self) -> None:
        self.aborted = True

    def close(self, drain: bool = True) -> None:
        if self.thread.is_alive():
            self.queue.put(None)
            self.thread.join()


def plain_loop(path: Path, plan, samples: np.ndarray, out: Path, progress) -> dict:
    """The plain loop's Server QPS at the plan's SLO (bisected like the search) and its Offline samples/s."""
    import onnxruntime as ort

    from core.host import usable_cores
    from deploy.serving.executors import ServingConfig
    from deploy.serving.search import bisect_qps
    from deploy.serving.trials import TrialSettings, run_trial

    options = ort.SessionOptions()
    options.intra_op_num_threads = usable_cores()
    options.log_severity_level = 3
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    config = ServingConfig(PLAIN_MAX_BATCH, 0, 1, usable_cores())  # what it amounts to, for the record
    root = out / "plain-loop" / path.stem
    count = [0]

    def run(settings: TrialSettings, tag: str):
        count[0] += 1
        progress.stage(f"plain loop {path.name}: {tag}")
        return run_trial(lambda respond: PlainLoop(session, respond), config, settings, samples, root,
                         f"{count[0]:02d}-{tag}")

    d, queries = plan.duration_s, plan.server_queries
    offline = run(TrialSettings("offline", d, 1, 4 * d + 30, expected_qps=400.0, seed=plan.seed), "offline")
    rate = offline.result["samples_per_s"] or 100.0

    def probe(qps: float):
        trial = run(TrialSettings("server", d, queries, 1.5 * max(d, queries / qps) + 10, target_qps=qps,
                                  slo_ms=plan.slo_ms, seed=plan.seed), f"server-{qps:g}qps")
        progress.stage(f"  {trial.result['validity']}, p99 {trial.p99_ms:.1f} ms")
        return trial

    edge = bisect_qps(probe, plan.slo_ms, 0.8 * rate, queries / plan.max_run_s, plan.max_trials, plan.ratio)
    best, above = edge.best, edge.above
    return {"model": str(path), "offline_samples_per_s": rate, "server_max_qps": best.settings.target_qps if best
            else None, "server_p99_ms": best.p99_ms if best else None,
            "loadgen_summary": f"plain-loop/{path.stem}/{best.folder}/mlperf_log_summary.txt" if best else None,
            "probe_above": None if above is None else {"target_qps": above.settings.target_qps,
                                                       "p99_ms": above.p99_ms, "valid": above.valid},
            "trials": [t.to_dict() for t in edge.trials]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--onnx-dir", type=Path, default=Path("runs/demo/onnx"))
    parser.add_argument("--out", type=Path, help="keep every report and LoadGen log here")
    parser.add_argument("--slo-ms", type=float, default=50.0)
    parser.add_argument("--low-slo-ms", type=float, default=15.0)
    parser.add_argument("--duration", type=float, default=5.0, help="LoadGen's minimum seconds per run")
    parser.add_argument("--tail-share", type=float, default=0.005,
                        help="Server runs sized to pass LoadGen's early stopping with this share over the SLO")
    parser.add_argument("--low-tail-share", type=float, default=0.0025,
                        help="the same for the low-SLO runs (their QPS is lower: shorter runs)")
    parser.add_argument("--max-run", type=float, default=30.0,
                        help="the search's floor: no Server probe that would need longer than this")
    parser.add_argument("--max-trials", type=int, default=6, help="Server runs per runtime × precision")
    args = parser.parse_args()
    from core.host import tune_allocator

    tune_allocator()
    with contextlib.nullcontext(str(args.out)) if args.out else tempfile.TemporaryDirectory(prefix="capacity-") as d:
        report = run(args, Path(d))
        Path(d).mkdir(parents=True, exist_ok=True)
        (Path(d) / "benchmark.json").write_text(json.dumps(report, indent=2) + "\n")
        print_report(report)


def run(args: argparse.Namespace, out: Path) -> dict:
    from deploy.serving.capacity import run_capacity
    from deploy.serving.plan import CapacityPlan
    from deploy.serving.progress import SearchBars
    from deploy.serving.qsl import load_sample_set
    from core.onnx_file import read_onnx_info

    files = [args.onnx_dir / f"model.{p}{lrn}.onnx" for p in ("fp32", "int8") for lrn in ("", ".native-lrn")]
    int8 = [f for f in files if ".int8." in f.name]
    progress = SearchBars()
    common = dict(runtimes=("onnxruntime", "openvino"), duration_s=args.duration, max_trials=args.max_trials,
                  max_run_s=args.max_run, overwrite=True)
    start = time.perf_counter()
    plan = CapacityPlan(slo_ms=args.slo_ms, scenarios=("server", "offline", "single-stream"),
                        tail_share=args.tail_share, **common)
    main_report = run_capacity(files, plan, out / f"slo{args.slo_ms:g}", progress).to_dict()
    samples = load_sample_set([read_onnx_info(f) for f in int8], plan.images, plan.seed).samples
    plain = [plain_loop(f, plan, samples, out, progress) for f in int8]
    low = []
    for slo in (args.low_slo_ms, *[s for s in LOWER_SLOS if s > args.low_slo_ms]):
        low_plan = CapacityPlan(slo_ms=slo, scenarios=("server",), tail_share=args.low_tail_share, **common)
        report = run_capacity(int8, low_plan, out / f"slo{slo:g}", progress).to_dict()
        low.append(summary(report))
        if report["recommendation"] is not None:
            break
    return {"slo_ms": args.slo_ms, "capacity": summary(main_report), "plain_loop": plain, "low_slo": low,
            "settings": vars(args) | {"onnx_dir": str(args.onnx_dir), "out": str(args.out)},
            "server_min_queries": plan.server_queries,
            "low_slo_min_queries": CapacityPlan(tail_share=args.low_tail_share).server_queries,
            "wall_s": round(time.perf_counter() - start, 1),
            "cpu": main_report["environment"]["cpu"]}


def summary(report: dict) -> dict:
    keys = ("runtime", "precision", "model", "server_max_qps", "server_p99_ms", "queue_wait_share", "config",
            "probe_above", "offline_samples_per_s", "single_stream", "accuracy", "valid", "loadgen_summary",
            "single_sample_p50_ms", "server_note", "status")
    return {"slo_ms": report["slo_ms"], "recommendation": report["recommendation"],
            "rows": [{k: r.get(k) for k in keys} for r in report["results"]], "wall_s": report["wall_s"]}


def print_report(report: dict) -> None:
    from deploy.serving.render import config_text

    cap, slo = report["capacity"], report["slo_ms"]
    print(f"\n## Capacity at p99 <= {slo:g} ms (LoadGen Server runs of >= {report['server_min_queries']} queries)\n")
    print("| runtime | precision | file | Server QPS | p99 ms | configuration | probe above (QPS, p99, valid) | "
          "above/answer | Offline samples/s | Server ÷ Offline | SingleStream p50 ms | agreement |")
    print("|---|---|---|---:|---:|---|---|---:|---:|---:|---:|---:|")
    for r in cap["rows"]:
        above, qps, off = r["probe_above"], r["server_max_qps"], r["offline_samples_per_s"]
        probe = "-" if not above else f"{above['target_qps']:g}, {_f(above['p99_ms'])}, {above['valid']}"
        ratio = "-" if not (above and qps) else f"{above['target_qps'] / qps:.3f}"
        share = "-" if not (qps and off) else f"{qps / off:.3f}"
        agreement = (r["accuracy"] or {}).get("agreement")
        print(f"| {r['runtime']} | {r['precision']} | {Path(r['model']).name} | {qps or '-'} | "
              f"{_f(r['server_p99_ms'])} | {config_text(r['config'])} | {probe} | {ratio} | {_f(off)} | {share} | "
              f"{_f((r['single_stream'] or {}).get('p50_ms'))} | "
              f"{'-' if agreement is None else f'{100 * agreement:.2f} %'} |")
    plain = [p for p in report["plain_loop"] if p["server_max_qps"]]
    rec = cap["recommendation"]
    print("\nPlain loop (one ORT session, all cores, whatever is queued up to 32): " + "; ".join(
        f"{Path(p['model']).name}: Server {p['server_max_qps'] or '-'} QPS (p99 {_f(p['server_p99_ms'])} ms), "
        f"probe above {p['probe_above']}, Offline {_f(p['offline_samples_per_s'])} samples/s"
        for p in report["plain_loop"]))
    if rec and plain:
        base = max(p["server_max_qps"] for p in plain)
        print(f"Recommended {rec['runtime']} {rec['precision']} {rec['server_max_qps']:g} QPS ÷ best plain loop "
              f"{base:g} QPS = {rec['server_max_qps'] / base:.2f} (target >= 1.3)")
        best = next(r for r in cap["rows"] if r["runtime"] == rec["runtime"] and r["precision"] == rec["precision"])
        if best["offline_samples_per_s"]:
            print(f"Best runtime's Server ÷ its Offline: {rec['server_max_qps']:g} / "
                  f"{best['offline_samples_per_s']:.1f} = {rec['server_max_qps'] / best['offline_samples_per_s']:.3f}"
                  " (target >= 0.85)")
    for low in report["low_slo"]:
        r = low["recommendation"]
        if r:
            print(f"At p99 <= {low['slo_ms']:g} ms: {r['runtime']} {r['precision']} {r['server_max_qps']:g} QPS "
                  f"(p99 {_f(r['server_p99_ms'])} ms, {config_text(r['config'])})")
        else:
            notes = "; ".join(f"{x['runtime']} {x['precision']}: {x.get('server_note')}" for x in low["rows"])
            print(f"At p99 <= {low['slo_ms']:g} ms: no VALID answer ({notes})")
    print(f"\nWall time {report['wall_s']:.0f} s on {report['cpu'].get('model')} ({report['cpu'].get('usable_cores')} "
          "cores)")


def _f(value) -> str:
    return "-" if value is None or value != value else f"{value:.1f}"


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
