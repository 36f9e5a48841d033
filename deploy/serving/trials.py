"""One MLPerf LoadGen run (a trial) against a server: the SUT and QSL, LoadGen's settings, its logs kept per trial,
and the results read back from LoadGen's own detail log."""
from __future__ import annotations

import json
import logging
import shutil
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from core.errors import UnavailableError
from core.load import CpuTimes, LoadShare
from deploy.serving.executors import Executors, ServingConfig
from deploy.serving.server import Response, Server

log = logging.getLogger(__name__)
LOADGEN_VERSION = "6.0.17"
INSTALL_HINT = f"pip install mlcommons-loadgen=={LOADGEN_VERSION}"
SCENARIOS = {"server": "Server", "offline": "Offline", "single-stream": "SingleStream", "multi-stream": "MultiStream"}
KEPT = ("mlperf_log_summary.txt", "mlperf_log_detail.txt", "mlperf_log_accuracy.json")  # the trace is not
_PERCENTILES = {"p50_ms": "50.00", "p90_ms": "90.00", "p99_ms": "99.00", "p999_ms": "99.90"}


def loadgen():
    """The ``mlperf_loadgen`` module.

    Raises:
        UnavailableError: LoadGen is not installed (the message says how to install it).
    """
    try:
        import mlperf_loadgen
    except ImportError as e:
        raise UnavailableError(f"MLPerf LoadGen is not installed ({e}); {INSTALL_HINT}") from None
    return mlperf_loadgen


@dataclass(frozen=True)
class TrialSettings:
    """LoadGen's settings for one run (those not set keep LoadGen's defaults)."""
    scenario: str                      # a key of SCENARIOS
    min_duration_s: float
    min_queries: int
    max_duration_s: float              # LoadGen stops issuing here, so a run (and a Ctrl-C) ends in bounded time
    target_qps: float = 0.0            # server
    slo_ms: float = 0.0                # server: the p99 target
    expected_latency_ms: float = 0.0   # single-stream / multi-stream: LoadGen sizes its schedule with it
    expected_qps: float = 0.0          # offline: LoadGen issues max(expected * duration * 1.1, min queries) samples
    samples_per_query: int = 8         # multi-stream
    accuracy_samples: int = 512        # responses LoadGen logs in performance mode (mlperf_log_accuracy.json)
    seed: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Trial:
    """A finished LoadGen run: its settings, the configuration it served with, LoadGen's results and the server's
    own counts. ``folder`` (relative to the report folder) holds LoadGen's logs."""
    scenario: str
    config: ServingConfig
    settings: TrialSettings
    folder: str
    result: dict[str, Any]
    server: dict[str, Any]
    wall_s: float
    load: dict[str, Any] = field(default_factory=dict)   # other processes' CPU share while it ran (core.load)
    accuracy: dict[str, Any] | None = field(default=None, compare=False)

    @property
    def valid(self) -> bool:
        """LoadGen says VALID, and no request failed (a timed-out request is LoadGen's to judge: it is late)."""
        return self.result.get("validity") == "VALID" and not self.server.get("failed")

    @property
    def p99_ms(self) -> float | None:
        return self.result.get("p99_ms")

    def met(self, slo_ms: float) -> bool:
        """VALID with p99 within ``slo_ms``."""
        return self.valid and self.p99_ms is not None and self.p99_ms <= slo_ms

    def to_dict(self) -> dict[str, Any]:
        return {"scenario": self.scenario, "config": self.config.to_dict(), "settings": self.settings.to_dict(),
                "folder": self.folder, "loadgen_summary": f"{self.folder}/mlperf_log_summary.txt",
                "loadgen_detail": f"{self.folder}/mlperf_log_detail.txt", "valid": self.valid, **self.result,
                "server": self.server, "load": self.load, "accuracy": self.accuracy, "wall_s": round(self.wall_s, 2)}


def serve(executors: Executors, config: ServingConfig, max_queue_wait_us: int | None = None
          ) -> Callable[[Callable[[list[Response]], None]], Server]:
    """What :func:`run_trial` serves with: a :class:`Server` of ``config``'s policy on ``executors``."""
    return lambda respond: Server(executors, config.policy(max_queue_wait_us), on_responses=respond)


def run_trial(make_server: Callable[[Callable[[list[Response]], None]], Any], config: ServingConfig,
              settings: TrialSettings, samples: np.ndarray, root: Path, name: str,
              tick: Callable[[float], None] | None = None) -> Trial:
    """Serve one LoadGen run and keep its logs in ``root/name`` (written in a hidden folder, renamed when done).

    Args:
        make_server: Builds the server for this run from the function that answers LoadGen (:func:`serve`, or any
            object with ``submit(items)``, ``abort()``, ``close(drain)`` and ``stats.to_dict()``).
        config: The configuration it serves with (recorded with the trial).
        settings: LoadGen's settings.
        samples: The QSL: one sample per row, indexed by LoadGen's sample index.
        root, name: The trial's folder is ``root/name``.
        tick: Called with the elapsed seconds about every 0.1 s while LoadGen runs (progress bars).

    The SUT queues LoadGen's samples into the server and answers each with its top-1 class (an int32, which LoadGen
    logs for ``settings.accuracy_samples`` of them). LoadGen runs on a helper thread so Ctrl-C reaches this one at
    once: the server then answers everything without running it until LoadGen's schedule ends (at most
    ``max_duration_s``), the trial's logs are dropped and KeyboardInterrupt is raised again.
    """
    lg = loadgen()
    tmp = root / f".{name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)

    def respond(responses: list[Response]) -> None:
        answers = [np.array([int(np.argmax(r.output))], np.int32) if r.error is None else None for r in responses]
        lg.QuerySamplesComplete([lg.QuerySampleResponse(r.key, a.ctypes.data, a.nbytes) if a is not None else
                                 lg.QuerySampleResponse(r.key, 0, 0) for r, a in zip(responses, answers)])

    server = make_server(respond)
    sut = lg.ConstructSUT(lambda query: server.submit([(s.id, samples[s.index]) for s in query]), lambda: None)
    qsl = lg.ConstructQSL(len(samples), len(samples), lambda indices: None, lambda indices: None)
    start, cpu = time.perf_counter(), CpuTimes.now()
    try:
        interrupted = _start_test(lg, sut, qsl, _settings(lg, settings), _log_settings(lg, tmp), server, tick)
    finally:
        server.close(drain=True)
        lg.DestroyQSL(qsl)
        lg.DestroySUT(sut)
    if interrupted:
        shutil.rmtree(tmp, ignore_errors=True)
        raise KeyboardInterrupt
    folder = root / name
    for path in tmp.iterdir():
        if path.name not in KEPT:
            path.unlink()
    shutil.rmtree(folder, ignore_errors=True)
    tmp.rename(folder)
    share = LoadShare.between(cpu, CpuTimes.now())
    load = {"other_share": share.other_share, "steal_share": share.steal_share, "busy": share.busy}
    trial = Trial(settings.scenario, config, settings, name, read_results(folder / "mlperf_log_detail.txt"),
                  server.stats.to_dict(), time.perf_counter() - start, load)
    log.debug("trial %s: %s", name, trial.result.get("validity"))
    return trial


def _start_test(lg, sut, qsl, settings, log_settings, server, tick) -> bool:
    """Run LoadGen on a helper thread; returns whether Ctrl-C cut it short.

    The wait is on an Event, not Thread.join: a KeyboardInterrupt inside join() can leave Python 3.11 believing the
    thread has stopped while LoadGen still runs (bpo-45274's fix releases the running thread's lock), and tearing the
    SUT down under it crashes the process.
    """
    finished = threading.Event()

    def run() -> None:
        try:
            lg.StartTestWithLogSettings(sut, qsl, settings, log_settings)
        finally:
            finished.set()

    start = time.perf_counter()
    threading.Thread(target=run, name="loadgen", daemon=True).start()
    interrupted = False
    while not finished.is_set():
        try:
            finished.wait(0.1)
            if tick is not None:
                tick(time.perf_counter() - start)
        except KeyboardInterrupt:
            if not interrupted:
                log.warning("Ctrl-C: answering LoadGen's remaining queries without running them, then stopping")
            interrupted = True
            server.abort()
    return interrupted


def _settings(lg, s: TrialSettings):
    t = lg.TestSettings()
    t.scenario = getattr(lg.TestScenario, SCENARIOS[s.scenario])
    t.mode = lg.TestMode.PerformanceOnly
    t.min_duration_ms = int(s.min_duration_s * 1000)
    t.max_duration_ms = int(s.max_duration_s * 1000)
    t.min_query_count = s.min_queries
    t.qsl_rng_seed = t.sample_index_rng_seed = t.schedule_rng_seed = s.seed
    t.accuracy_log_rng_seed = s.seed + 1  # 0 would turn the sampled accuracy log off
    t.accuracy_log_sampling_target = s.accuracy_samples
    if s.scenario == "server":
        t.server_target_qps = s.target_qps
        t.server_target_latency_ns = int(s.slo_ms * 1e6)
        t.server_target_latency_percentile = 0.99
    elif s.scenario == "offline":
        t.offline_expected_qps = s.expected_qps
    elif s.scenario == "single-stream":
        t.single_stream_expected_latency_ns = int(s.expected_latency_ms * 1e6)
    else:
        t.multi_stream_expected_latency_ns = int(s.expected_latency_ms * 1e6)
        t.multi_stream_samples_per_query = s.samples_per_query
    return t


def _log_settings(lg, folder: Path):
    settings = lg.LogSettings()
    settings.log_output.outdir = str(folder)
    settings.log_output.copy_summary_to_stdout = False
    settings.enable_trace = False
    return settings


def read_results(detail: Path) -> dict[str, Any]:
    """LoadGen's results from its detail log (the ``:::MLLOG`` JSON lines), latencies in ms."""
    values: dict[str, Any] = {}
    for line in detail.read_text(errors="replace").splitlines():
        if line.startswith(":::MLLOG "):
            try:
                entry = json.loads(line[len(":::MLLOG "):])
            except ValueError:
                continue
            values[entry.get("key")] = entry.get("value")
    per_query = "result_99.00_percentile_per_query_latency_ns" in values  # multi-stream reports queries of N
    out = {"validity": values.get("result_validity"),
           "early_stopping_met": values.get("early_stopping_met"),
           "min_duration_met": values.get("result_min_duration_met"),
           "min_queries_met": values.get("result_min_queries_met"),
           "perf_constraints_met": values.get("result_perf_constraints_met"),
           "invalid_reason": values.get("result_invalid_reason") or None,
           "early_stopping": (values.get("early_stopping_result") or "").strip() or None,
           "queries": values.get("result_query_count"),
           "overlatency_queries": values.get("result_overlatency_query_count"),
           "scheduled_qps": values.get("result_scheduled_samples_per_sec"),
           "completed_qps": values.get("result_completed_samples_per_sec"),
           "samples_per_s": values.get("result_samples_per_second"),
           "num_errors": values.get("num_errors")}
    for key, name in _PERCENTILES.items():
        ns = values.get(f"result_{name}_percentile{'_per_query' if per_query else ''}_latency_ns")
        out[key] = ns / 1e6 if isinstance(ns, (int, float)) else None
    estimate = values.get("early_stopping_latency_ss")
    out["early_stopping_p90_ms"] = estimate / 1e6 if isinstance(estimate, (int, float)) and estimate else None
    return out


def read_responses(accuracy_log: Path) -> list[tuple[int, int | None]]:
    """``(sample index, top-1 class or None for a request answered without a result)`` of every response LoadGen
    logged."""
    try:
        entries = json.loads(accuracy_log.read_text() or "[]")
    except (OSError, ValueError):
        return []
    out = []
    for entry in entries:
        data = bytes.fromhex(entry.get("data", ""))
        out.append((int(entry["qsl_idx"]), int.from_bytes(data[:4], "little", signed=True) if len(data) >= 4
                    else None))
    return out
