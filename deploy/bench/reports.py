"""Bench reports: frozen dataclasses with to_dict() (deploy/render.py turns them into text; cli.py prints it)."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from deploy.formats import BENCH_FORMAT, BENCH_FORMAT_VERSION
from runtimes.parity import ParityReport



@dataclass(frozen=True)
class LatencyStats:
    """Latency distribution in milliseconds; ``cv`` = std / mean."""
    min: float
    mean: float
    p50: float
    p90: float
    p95: float
    p99: float
    max: float
    std: float
    cv: float
    samples: int

    @classmethod
    def from_samples(cls, samples_ms: Sequence[float]) -> "LatencyStats | None":
        if not samples_ms:
            return None
        a = np.asarray(samples_ms, dtype=np.float64)
        p50, p90, p95, p99 = np.percentile(a, [50, 90, 95, 99])
        mean, std = float(a.mean()), float(a.std(ddof=1)) if a.size > 1 else 0.0
        return cls(float(a.min()), mean, float(p50), float(p90), float(p95), float(p99), float(a.max()), std,
                   std / mean if mean > 0 else 0.0, int(a.size))

    def to_dict(self) -> dict[str, float]:
        return {k: getattr(self, k) for k in ("p50", "p90", "p95", "p99", "mean", "min", "max", "std", "cv",
                                              "samples")}


@dataclass(frozen=True)
class ColdStart:
    """One runtime's start-up: load (session creation / engine build or load) and the first inference."""
    load_ms: float
    first_inference_ms: float | None
    batch_size: int
    details: dict[str, Any] = field(default_factory=dict)   # e.g. engine_source "built" | "cache"

    def to_dict(self) -> dict[str, Any]:
        return {"load_ms": self.load_ms, "first_inference_ms": self.first_inference_ms,
                "batch_size": self.batch_size, **self.details}


@dataclass(frozen=True)
class RuntimeParity:
    """A runtime's parity checks against the reference (random inputs, and real images when available)."""
    reference: str
    checks: tuple[ParityReport, ...]
    note: str = ""
    divergence: str | None = None   # a failed check: where it first leaves its tolerance, layer by layer

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.checks)

    def to_dict(self) -> dict[str, Any]:
        return {"passed": self.passed, "reference": self.reference, "note": self.note,
                "first_divergence": self.divergence, "checks": [c.to_dict() for c in self.checks]}


@dataclass(frozen=True)
class BenchResult:
    """One runtime at one batch size."""
    runtime: str
    precision: str
    batch_size: int
    device: str
    latency_ms: LatencyStats | None          # host end-to-end
    device_latency_ms: LatencyStats | None   # CUDA events (GPU runtimes)
    throughput: float                        # images/s from the mean host latency
    device_throughput: float | None          # images/s from the mean device latency
    warmup_iters: int
    first_call_ms: float | None
    parity: RuntimeParity | None
    vs_reference: float | None = None        # throughput ÷ the ratio baseline's at this batch size
    interrupted: bool = False
    warnings: tuple[str, ...] = ()
    # Per-call host latencies behind ``latency_ms``, per interleaved round: what the intervals are computed from and
    # what a later comparison (the regression gate) resamples.
    rounds_ms: tuple[tuple[float, ...], ...] = field(default=(), repr=False)
    p50_ci95: tuple[float, float] | None = None        # 95 % interval of the p50 latency (deploy/bench/stats.py)
    throughput_ci95: tuple[float, float] | None = None  # 95 % interval of the throughput
    model: str | None = None                 # the exact file (or checkpoint) this row ran

    @property
    def samples_ms(self) -> tuple[float, ...]:
        return tuple(v for r in self.rounds_ms for v in r)

    def to_dict(self) -> dict[str, Any]:
        return {"runtime": self.runtime, "precision": self.precision, "batch_size": self.batch_size,
                "device": self.device, "model": self.model,
                "iterations": self.latency_ms.samples if self.latency_ms else 0,
                "latency_ms": self.latency_ms.to_dict() if self.latency_ms else None,
                "device_latency_ms": self.device_latency_ms.to_dict() if self.device_latency_ms else None,
                "throughput": self.throughput, "device_throughput": self.device_throughput,
                "vs_reference": self.vs_reference, "warmup_iters": self.warmup_iters,
                "first_call_ms": self.first_call_ms, "parity": self.parity.to_dict() if self.parity else None,
                "interrupted": self.interrupted, "warnings": list(self.warnings),
                "p50_ci95": interval_list(self.p50_ci95), "throughput_ci95": interval_list(self.throughput_ci95),
                "samples_ms": compact_rounds(self.rounds_ms)}


def compact_rounds(rounds_ms) -> dict[str, Any]:
    """Per-call latencies in a report: microsecond resolution (3 decimals of a ms), one list per round."""
    return {"unit": "ms", "rounds": [[round(float(v), 3) for v in r] for r in rounds_ms]}


def read_rounds(value: Any) -> tuple[tuple[float, ...], ...]:
    """The rounds a report's ``samples_ms`` holds (``compact_rounds``), or () when it holds none.

    Raises:
        ValueError, TypeError: ``value`` holds something else than lists of positive finite numbers.
    """
    if value is None:
        return ()
    rounds = tuple(tuple(float(v) for v in r) for r in value["rounds"])
    if any(not (math.isfinite(v) and v > 0) for r in rounds for v in r):
        raise ValueError("samples_ms: latencies must be positive finite numbers")
    return rounds


def interval_list(value: tuple[float, float] | None) -> list[float] | None:
    """An interval as a report writes it: ``[lo, hi]``, or None."""
    return None if value is None else [float(value[0]), float(value[1])]


@dataclass(frozen=True)
class BenchReport:
    model: str
    precision: str
    environment: dict[str, Any]
    reference: dict[str, Any]                 # what the parity reference was, and why
    results: tuple[BenchResult, ...]
    parity: dict[str, RuntimeParity]          # per runtime
    cold_start: dict[str, ColdStart]          # per runtime
    runtimes: dict[str, dict[str, Any]]       # per runtime: describe()
    ratio_baseline: str | None                # the runtime whose throughput the ratios divide by
    skipped: dict[str, str] = field(default_factory=dict)    # runtime → why it did not run (unavailable)
    errors: dict[str, str] = field(default_factory=dict)     # runtime → what failed (load/build/run)
    notes: tuple[str, ...] = ()
    interrupted: bool = False
    failure: str | None = None               # the file or its reference failed before any runtime ran (run_benches)

    @property
    def parity_passed(self) -> bool:
        return all(p.passed for p in self.parity.values())

    @property
    def passed(self) -> bool:
        return self.parity_passed and not self.errors and not self.interrupted and self.failure is None

    def failures(self) -> list[str]:
        out = [self.failure] if self.failure else []
        for p in self.parity.values():
            failed = [f"parity failed: {c}" for c in p.checks if not c.passed]
            out += failed + ([f"  {p.divergence}"] if failed and p.divergence else [])
        return out + [f"{name}: {msg}" for name, msg in self.errors.items()]

    def to_dict(self) -> dict[str, Any]:
        return json_safe({
            "format": BENCH_FORMAT, "format_version": BENCH_FORMAT_VERSION,
            "model": self.model, "precision": self.precision, "environment": self.environment,
            "reference": self.reference, "ratio_baseline": self.ratio_baseline,
            "results": [r.to_dict() for r in self.results],
            "parity": {k: v.to_dict() for k, v in self.parity.items()},
            "cold_start": {k: v.to_dict() for k, v in self.cold_start.items()},
            "runtimes": self.runtimes, "skipped": self.skipped, "errors": self.errors, "notes": list(self.notes),
            "failure": self.failure, "passed": self.passed, "interrupted": self.interrupted})

    def __str__(self) -> str:
        status = "PASS" if self.passed else "INTERRUPTED" if self.interrupted else "FAIL"
        return f"{status}: {len(self.results)} result(s) for {self.model}, reference {self.reference.get('name')}"


def json_safe(value: Any) -> Any:
    """JSON has no inf/nan: write them as strings."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value
