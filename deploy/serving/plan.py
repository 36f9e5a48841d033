"""What a capacity run measures: the SLO, the scenarios, how long LoadGen runs and how far the search goes."""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from core.contract import MAX_BATCH
from core.errors import UsageError
from deploy.bench.verdict import DEFAULT_MAX_ACCURACY_DROP
from deploy.serving.sizing import server_queries
from deploy.serving.trials import SCENARIOS

MAX_TAIL_SHARE = 0.0075
PRECISION_CHOICES = ("auto", "bf16")   # auto: each file's own precision; bf16: fp32 files computed in bf16


@dataclass(frozen=True)
class CapacityPlan:
    """A capacity run's settings (one CLI option each)."""
    runtimes: tuple[str, ...] = ("onnxruntime", "openvino")
    slo_ms: float = 50.0                   # the p99 latency target of the Server scenario
    precisions: tuple[str, ...] = ("auto",)
    scenarios: tuple[str, ...] = tuple(SCENARIOS)
    duration_s: float = 5.0                # LoadGen's minimum duration of every run
    tail_share: float = 0.005              # a Server run is sized so this share of queries over the SLO still passes
    min_queries: int | None = None         # Server runs: LoadGen's min_query_count (None: from tail_share)
    max_trials: int = 12                   # Server runs per runtime × precision
    max_run_s: float = 60.0                # the search's floor: no Server probe below min queries / this QPS
    max_batch: int = 32                    # the largest batch the search profiles and configures
    images: int = 256                      # samples in LoadGen's QSL
    threads: int | None = None             # the cores the executors share (None: the usable cores)
    ratio: float = 1.1                     # the search stops when the failing probe is within this of the answer
    max_accuracy_drop: float = DEFAULT_MAX_ACCURACY_DROP  # top-1 points the recommendation may lose
    seed: int = 0
    retry_busy: bool = True                # repeat a failed Server probe once other processes have gone quiet
    overwrite: bool = False                # replace an earlier capacity report in the output folder

    def __post_init__(self) -> None:
        checks = [
            (math.isfinite(self.slo_ms) and 0 < self.slo_ms <= 600_000, f"--slo-ms {self.slo_ms}: expected a "
             "number of milliseconds above 0 and up to 600000"),
            (math.isfinite(self.duration_s) and 1 <= self.duration_s <= 600, f"--duration {self.duration_s}: "
             "expected 1 to 600 seconds"),
            (math.isfinite(self.tail_share) and 0 <= self.tail_share <= MAX_TAIL_SHARE, f"--tail-share "
             f"{self.tail_share}: expected 0 to {MAX_TAIL_SHARE} (a p99 run with 1 % of its queries over the SLO "
             "never passes; 0.75 % already needs 8,397 queries)"),
            (self.min_queries is None or 1 <= self.min_queries <= 10_000_000, f"--min-queries {self.min_queries}: "
             "expected 1..10000000"),
            (1 <= self.max_trials <= 200, f"--max-trials {self.max_trials}: expected 1..200"),
            (math.isfinite(self.max_run_s) and 5 <= self.max_run_s <= 3600, f"--max-run {self.max_run_s}: expected "
             "5 to 3600 seconds"),
            (1 <= self.max_batch <= MAX_BATCH, f"--max-batch {self.max_batch}: expected 1..{MAX_BATCH}"),
            (1 <= self.images <= 100_000, f"--images {self.images}: expected 1..100000"),
            (self.threads is None or 1 <= self.threads <= 1024, f"--threads {self.threads}: expected 1..1024"),
            (math.isfinite(self.ratio) and 1.01 <= self.ratio <= 1.15, f"ratio {self.ratio}: expected 1.01..1.15"),
            (math.isfinite(self.max_accuracy_drop) and 0 <= self.max_accuracy_drop <= 100,
             f"--max-accuracy-drop {self.max_accuracy_drop}: expected 0..100 points"),
            (bool(self.runtimes) and bool(self.scenarios) and bool(self.precisions), "no runtime, scenario or "
             "precision to measure"),
        ]
        unknown = [s for s in self.scenarios if s not in SCENARIOS]
        checks.append((not unknown, f"unknown scenario {', '.join(unknown)}; expected {', '.join(SCENARIOS)} or all"))
        bad = [p for p in self.precisions if p not in PRECISION_CHOICES]
        checks.append((not bad, f"unknown precision {', '.join(bad)}; expected {', '.join(PRECISION_CHOICES)}"))
        for ok, message in checks:
            if not ok:
                raise UsageError(message)

    @property
    def server_queries(self) -> int:
        """LoadGen's min_query_count for a Server run (sizing.server_queries of the tail share)."""
        return self.min_queries or server_queries(self.tail_share)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "server_min_queries": self.server_queries}
