"""One runtime × precision measured end to end: the executor profile, LoadGen's Offline, SingleStream and MultiStream
runs, the Server search at the SLO and the accuracy of the answer's responses."""
from __future__ import annotations

import dataclasses
import logging
import math
import re
from pathlib import Path
from typing import Any

import numpy as np

from core.load import wait_for_quiet
from deploy.serving.executors import Executors, Layout, ServingConfig, ServingTarget, layouts
from deploy.serving.qsl import SampleSet
from deploy.serving.search import (Profile, best_throughput, candidates, profile_layout, server_search,
                                   single_sample_p50)
from deploy.serving.simulate import ranked
from deploy.serving.sizing import server_queries, stream_queries
from deploy.serving.trials import Trial, TrialSettings, read_responses, run_trial, serve
from export.spec import accuracy_budget

log = logging.getLogger(__name__)
MULTI_STREAM_SAMPLES = 8


class RowRunner:
    """Measures one target; keeps one layout's executors open at a time (``close`` releases them)."""

    def __init__(self, target: ServingTarget, plan, sample_set: SampleSet, out_dir: Path, progress, cores: int):
        self.target, self.plan, self.sample_set, self.progress, self.cores = target, plan, sample_set, progress, cores
        self.samples = sample_set.samples.astype(target.info.inputs[0].dtype, copy=False)
        self.folder = f"trials/{target.runtime}-{target.precision or target.info.precision}"
        self.out_dir = out_dir
        self.root = out_dir / self.folder
        self.trials: list[Trial] = []
        self._open: Executors | None = None
        self.simulated: dict[str, Any] | None = None

    def executors(self, layout: Layout) -> Executors:
        if self._open is not None and self._open.layout == layout:
            return self._open
        self.close()
        self._open = Executors(self.target, layout, self.plan.max_batch)
        return self._open

    def close(self) -> None:
        if self._open is not None:
            self._open.close()
            self._open = None

    def single_sample_p50(self) -> float:
        return single_sample_p50(self.executors(Layout(1, self.cores)), self.samples)

    def trial(self, config: ServingConfig, settings: TrialSettings) -> Trial:
        qps = f"-{settings.target_qps:g}qps" if settings.scenario == "server" else ""
        slug = re.sub(r"[^A-Za-z0-9.]+", "-", f"b{config.max_batch}-d{config.queue_delay_us}-{config.layout.label}")
        name = f"{len(self.trials) + 1:02d}-{settings.scenario}{qps}-{slug}"
        label = f"{self.target.label} {settings.scenario}" + (f" {settings.target_qps:g} QPS" if qps else "")
        tick = self.progress.trial(label, _expected_s(settings))
        wait = int(4 * self.plan.slo_ms * 1000) if settings.scenario == "server" else None
        trial = run_trial(serve(self.executors(config.layout), config, wait), config, settings, self.samples,
                          self.root, name, tick)
        trial = dataclasses.replace(trial, folder=f"{self.folder}/{name}")
        self.trials.append(trial)
        self.progress.trial_done(label, _outcome(trial, self.plan.slo_ms))
        return trial

    def profiles(self) -> list[Profile]:
        found = []
        for layout in layouts(self.target.runtime, self.cores):
            self.progress.stage(f"{self.target.label}: profiling {layout.label} at batch 1..{self.plan.max_batch}")
            found.append(profile_layout(self.executors(layout), self.samples, self.plan.max_batch))
        return found

    def offline(self, profiles: list[Profile]) -> dict[str, Any]:
        config, rate = best_throughput(profiles)
        d = self.plan.duration_s
        trial = self.trial(config, TrialSettings("offline", d, 1, 4 * d + 30, expected_qps=1.25 * rate,
                                                 seed=self.plan.seed))
        return {"samples_per_s": trial.result["samples_per_s"], "valid": trial.valid, "config": config.to_dict(),
                "loadgen_summary": trial.to_dict()["loadgen_summary"], "profiled_samples_per_s": round(rate, 1)}

    def single_stream(self, p50_ms: float) -> dict[str, Any]:
        config = ServingConfig(1, 0, 1, self.cores)
        n = stream_queries(0.9)
        length = max(self.plan.duration_s, n * p50_ms / 1e3)
        trial = self.trial(config, TrialSettings("single-stream", self.plan.duration_s, n, 3 * length + 30,
                                                 expected_latency_ms=p50_ms, seed=self.plan.seed))
        r = trial.result
        return {"p50_ms": r["p50_ms"], "p90_ms": r["p90_ms"], "early_stopping_p90_ms": r["early_stopping_p90_ms"],
                "valid": trial.valid, "config": config.to_dict(), "loadgen_summary": trial.to_dict()["loadgen_summary"]}

    def multi_stream(self, profiles: list[Profile]) -> dict[str, Any]:
        def latency(p: Profile) -> float:
            return p.latency_at(math.ceil(MULTI_STREAM_SAMPLES / p.layout.executors))

        best = min(profiles, key=latency)
        batch = math.ceil(MULTI_STREAM_SAMPLES / best.layout.executors)
        config = ServingConfig(batch, 0, best.layout.executors, best.layout.threads, best.layout.mode)
        n = stream_queries(0.99)
        length = max(self.plan.duration_s, n * latency(best) / 1e3)
        trial = self.trial(config, TrialSettings("multi-stream", self.plan.duration_s, n, 3 * length + 30,
                                                 expected_latency_ms=latency(best), seed=self.plan.seed,
                                                 samples_per_query=MULTI_STREAM_SAMPLES))
        return {"samples_per_query": MULTI_STREAM_SAMPLES, "p50_ms": trial.result["p50_ms"],
                "p99_ms": trial.result["p99_ms"], "valid": trial.valid, "config": config.to_dict(),
                "loadgen_summary": trial.to_dict()["loadgen_summary"]}

    def server(self, profiles: list[Profile], p50_ms: float) -> tuple[ServingConfig | None, Any]:
        plan = self.plan
        sized, least = plan.min_queries or server_queries(plan.tail_share), plan.min_queries or server_queries(0.0)

        def queries_at(qps: float) -> int:
            """The tail share's run length, shortened to --max-run at low QPS but never below LoadGen's floor (the
            fewest queries that pass with none over the SLO): a slow runtime still gets an answer, held to a
            stricter tail."""
            return max(least, min(sized, int(qps * plan.max_run_s)))

        def trial_at(config: ServingConfig, qps: float) -> Trial:
            queries = queries_at(qps)
            length = max(plan.duration_s, queries / qps)
            settings = TrialSettings("server", plan.duration_s, queries, 1.5 * length + 10, target_qps=qps,
                                     slo_ms=plan.slo_ms, seed=plan.seed)
            trial = self.trial(config, settings)
            if plan.retry_busy and not trial.met(plan.slo_ms) and trial.load.get("busy"):
                # Another process took the CPUs: that failure says nothing about this configuration. Once.
                self.progress.stage(f"{self.target.label}: other processes used {trial.load['other_share']:.0%} "
                                    "of the CPUs during that run; waiting for a quiet machine and repeating it")
                wait_for_quiet(30.0)
                trial = self.trial(config, settings)
            return trial

        options = self.options(profiles, p50_ms)

        def refinements(config: ServingConfig, best_qps: float) -> list[ServingConfig]:
            """Half the max batch, and a queue delay of the time half a max batch takes to arrive at the best QPS
            so far (bigger batches run more samples per second), up to a quarter of the SLO."""
            out = [dataclasses.replace(config, max_batch=config.max_batch // 2)] if config.max_batch > 1 else []
            delay_us = int(min(0.5 * config.max_batch / best_qps * 1e3, plan.slo_ms / 4) * 1000)
            return out + ([dataclasses.replace(config, queue_delay_us=delay_us)] if delay_us >= 50 else [])

        winner, edge, _ = server_search(trial_at, options, refinements, plan.slo_ms, least / plan.max_run_s,
                                        plan.max_trials, plan.ratio)
        return winner, edge

    def options(self, profiles: list[Profile], p50_ms: float) -> list[tuple[ServingConfig, float]]:
        """The configurations to try, best first: each layout's best by simulation (simulate.ranked), then the
        latency-rule candidates not among them as fallbacks. Keeps the simulated best in ``self.simulated``."""
        plan = self.plan
        overhead = max(0.0, p50_ms - min(p.latency_ms[1] for p in profiles)) if profiles else 0.0
        self.progress.stage(f"{self.target.label}: simulating the batcher on the profiled latencies")
        sim = ranked(profiles, plan.slo_ms, plan.max_batch, max(plan.tail_share, 0.001), overhead)
        self.simulated = None if not sim else {
            "qps": round(sim[0][1].qps, 1), "p99_ms": round(sim[0][1].p99_ms, 2), "config": sim[0][0].to_dict(),
            "mean_batch": round(sim[0][1].mean_batch, 2), "overhead_ms": round(overhead, 3)}
        first = [(config, result.qps) for config, result in sim]
        seen = {config for config, _ in first}
        return first + [c for c in candidates(profiles, plan.slo_ms, plan.max_batch) if c[0] not in seen]

    def accuracy(self, trial: Trial) -> dict[str, Any]:
        """The trial's logged responses against the reference top-1 (and the labels) of the same samples."""
        s = self.sample_set
        pairs = read_responses(self.out_dir / trial.folder / "mlperf_log_accuracy.json")
        answered = [(i, c) for i, c in pairs if c is not None]
        if not answered:
            return {"checked": 0, "unanswered": len(pairs), "within_budget": False}
        idx = np.array([i for i, _ in answered])
        top1 = np.array([c for _, c in answered])
        out: dict[str, Any] = {"checked": len(answered), "unanswered": len(pairs) - len(answered),
                               "distinct_samples": int(len(set(idx.tolist()))),
                               "agreement": float(np.mean(top1 == s.reference_top1[idx]))}
        budget = accuracy_budget(self.target.precision or self.target.info.precision, len(answered),
                                 self.plan.max_accuracy_drop)
        out["budget_points"] = budget
        if s.labels is not None:
            out["accuracy"] = float(np.mean(top1 == s.labels[idx]))
            out["reference_accuracy"] = float(np.mean(s.reference_top1[idx] == s.labels[idx]))
            out["drop_points"] = (out["reference_accuracy"] - out["accuracy"]) * 100
            out["within_budget"] = out["drop_points"] <= budget + 1e-9
        else:  # no labels: disagreement bounds any accuracy change from above
            out["within_budget"] = (1 - out["agreement"]) * 100 <= budget + 1e-9
        return out


def _expected_s(settings: TrialSettings) -> float:
    if settings.scenario == "server":
        return max(settings.min_duration_s, settings.min_queries / settings.target_qps)
    if settings.scenario == "offline":
        return settings.min_duration_s * 1.1
    return max(settings.min_duration_s, settings.min_queries * settings.expected_latency_ms / 1e3)


def _outcome(trial: Trial, slo_ms: float) -> str:
    r = trial.result

    def ms(key: str) -> str:
        return "-" if r.get(key) is None else f"{r[key]:.1f} ms"

    if trial.scenario == "server":
        verdict = "meets the SLO" if trial.met(slo_ms) else "fails"
        return (f"{r.get('validity')}, p99 {ms('p99_ms')} ({verdict}; {r.get('queries')} queries, "
                f"{r.get('overlatency_queries')} over {slo_ms:g} ms) [{trial.config.label}]")
    if trial.scenario == "offline":
        return f"{r.get('validity')}, {r.get('samples_per_s') or 0:.1f} samples/s [{trial.config.label}]"
    return f"{r.get('validity')}, p50 {ms('p50_ms')}, p90 {ms('p90_ms')}, p99 {ms('p99_ms')} [{trial.config.label}]"
