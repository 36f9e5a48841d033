"""The regression gate: compare a bench or pipeline report with a baseline one, row by row (runtime, precision, batch),
with confidence: each row is ok, regressed or inconclusive.

``compare`` is pure (two report dicts in, a GateResult out); ``load_baseline`` is the one function that reads a file.
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from typing import Any, Mapping

from core.contract import is_finite_number
from core.errors import UsageError
from deploy.formats import BENCH_FORMAT, BENCH_FORMAT_VERSION, PIPELINE_FORMAT, PIPELINE_FORMAT_VERSION
from deploy.bench.reports import interval_list, read_rounds
from deploy.bench.stats import METHOD, SEED, RatioJudgement, judge_ratio, replicates
from deploy.bench.excuses import Excuse, busier, environment_changes, host_slower
from deploy.bench.verdict import DEFAULT_MAX_ACCURACY_DROP

_VERSIONS = {BENCH_FORMAT: BENCH_FORMAT_VERSION, PIPELINE_FORMAT: PIPELINE_FORMAT_VERSION}
DEFAULT_MAX_SLOWDOWN = 0.05        # 5 % slower p50 (or 5 % less img/s) than the baseline fails a row
_EPS = 1e-9


class BaselineError(UsageError):
    """The --baseline file is not a bench or pipeline report of a format version this toolkit reads."""


@dataclass(frozen=True)
class RowComparison:
    """One (runtime, precision, batch) row measured on both sides."""
    runtime: str
    precision: str
    batch_size: int
    status: str                                  # ok | regressed | inconclusive
    reasons: tuple[str, ...]                     # why it regressed, or why its timing is undecided
    iterations: tuple[int, int]                  # timed calls: (baseline, current)
    p50_ms: tuple[float | None, float | None]
    throughput: tuple[float | None, float | None]
    cv: tuple[float | None, float | None]        # coefficient of variation of the latency (std / mean)
    parity_passed: tuple[bool | None, bool | None]
    top1_accuracy: tuple[float | None, float | None]
    p50_change: float | None                     # current / baseline − 1: +0.10 = 10 % slower
    throughput_change: float | None              # current / baseline − 1: −0.10 = 10 % fewer img/s
    p50_ratio_ci95: tuple[float, float] | None = None         # of current / baseline p50
    throughput_ratio_ci95: tuple[float, float] | None = None  # of baseline / current img/s (> 1 = slower now)
    seconds_to_decide: float | None = None       # inconclusive: timed seconds per row that would decide it

    @property
    def label(self) -> str:
        return _label((self.runtime, self.precision, self.batch_size))

    def to_dict(self) -> dict[str, Any]:
        sides = ("iterations", "p50_ms", "throughput", "cv", "parity_passed", "top1_accuracy")
        return {"runtime": self.runtime, "precision": self.precision, "batch_size": self.batch_size,
                "label": self.label, "status": self.status, "reasons": list(self.reasons),
                **{f"baseline_{k}": getattr(self, k)[0] for k in sides},
                **{f"current_{k}": getattr(self, k)[1] for k in sides},
                "p50_change": self.p50_change, "throughput_change": self.throughput_change,
                "p50_ratio_ci95": interval_list(self.p50_ratio_ci95),
                "throughput_ratio_ci95": interval_list(self.throughput_ratio_ci95),
                "seconds_to_decide": self.seconds_to_decide}


@dataclass(frozen=True)
class GateResult:
    """Every row both reports measured, judged against the allowed slowdown and accuracy loss."""
    baseline: str                                 # what the baseline is (kind, model, when)
    max_slowdown: float                           # fraction: 0.05 = 5 %
    max_accuracy_drop: float                      # top-1 points
    rows: tuple[RowComparison, ...]
    only_in_baseline: tuple[str, ...]             # "runtime precision batch N": listed, not failed
    only_in_current: tuple[str, ...]
    environment_changes: tuple[str, ...]          # "threads.torch_intra_op: 2 → 1"

    @property
    def regressions(self) -> tuple[RowComparison, ...]:
        return tuple(r for r in self.rows if r.status == "regressed")

    @property
    def inconclusive(self) -> tuple[RowComparison, ...]:
        return tuple(r for r in self.rows if r.status == "inconclusive")

    @property
    def outcome(self) -> str:
        """fail (a row regressed), inconclusive (none regressed, some undecided) or pass."""
        return "fail" if self.regressions else "inconclusive" if self.inconclusive else "pass"

    @property
    def passed(self) -> bool:
        return self.outcome == "pass"

    def to_dict(self) -> dict[str, Any]:
        return {"outcome": self.outcome, "passed": self.passed, "baseline": self.baseline,
                "max_slowdown": self.max_slowdown, "max_accuracy_drop_points": self.max_accuracy_drop,
                "method": METHOD, "compared": len(self.rows), "regressed": len(self.regressions),
                "inconclusive": len(self.inconclusive), "rows": [r.to_dict() for r in self.rows],
                "only_in_baseline": list(self.only_in_baseline), "only_in_current": list(self.only_in_current),
                "environment_changes": list(self.environment_changes)}


def parse_slowdown(text: str) -> float:
    """``5%`` or ``0.05`` → 0.05.

    Raises:
        UsageError: not a number, not finite, or outside (0, 10) (as a fraction: 0 % to 1000 %).
    """
    raw = str(text).strip()
    try:
        value = float(raw[:-1]) / 100 if raw.endswith("%") else float(raw)
    except ValueError:
        raise UsageError(f"expected a slowdown such as 5% or 0.05, got {text!r}") from None
    if not (math.isfinite(value) and 0 < value < 10):
        raise UsageError(f"the allowed slowdown must be above 0 and below 10 (1000%), got {text!r}")
    return value


def load_baseline(path: str | os.PathLike) -> dict[str, Any]:
    """Read a baseline report and check it is a bench or pipeline report of a format version this toolkit reads.

    Raises:
        BaselineError: unreadable, not JSON, not a bench/pipeline report, another format version, or rows without
            the fields the gate compares.
    """
    try:
        with open(path, encoding="utf-8") as f:
            report = json.load(f)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise BaselineError(f"--baseline {path}: not a readable JSON report ({e})") from None
    check_baseline(report, str(path))
    return report


def check_baseline(report: Any, source: str) -> None:
    """Raise BaselineError unless ``report`` is a bench or pipeline report of this toolkit's format version."""
    expected = f"a bench report ({BENCH_FORMAT} v{BENCH_FORMAT_VERSION}, from bench --json) or a pipeline report " \
               f"({PIPELINE_FORMAT} v{PIPELINE_FORMAT_VERSION}, OUT/report/report.json)"
    kind = report.get("format") if isinstance(report, dict) else None
    if kind not in _VERSIONS:
        older = isinstance(report, dict) and "results" in report and "environment" in report
        found = "a bench report from before reports carried a format (re-run bench to write one)" if older else \
            f"format {kind!r}" if kind else "no 'format' field"
        raise BaselineError(f"--baseline {source}: expected {expected}; found {found}")
    if report.get("format_version") != _VERSIONS[kind]:
        raise BaselineError(f"--baseline {source}: {kind} format version {report.get('format_version')!r}, this "
                            f"toolkit reads version {_VERSIONS[kind]}; re-run it with this version to get a baseline")
    try:
        rows(report)
    except (KeyError, TypeError, AttributeError, ValueError) as e:
        raise BaselineError(f"--baseline {source}: its rows lack the field {e} that the gate compares, or hold "
                            "something else in it") from None


def rows(report: Mapping[str, Any]) -> dict[tuple[str, str, int], dict[str, Any]]:
    """A bench or pipeline report's rows in one shape, keyed by (runtime, precision, batch size)."""
    out: dict[tuple[str, str, int], dict[str, Any]] = {}
    bench = report.get("format") == BENCH_FORMAT
    for r in report["results"] if bench else report["rows"]:
        lat = (r["latency_ms"] or {}) if bench else r
        out.setdefault((r["runtime"], r["precision"], int(r["batch_size"])), {
            "iterations": int(r.get("iterations") or 0), "p50_ms": _number(lat.get("p50" if bench else "p50_ms")),
            "cv": _number(lat.get("cv")), "throughput": _number(r["throughput"]),
            "parity_passed": (r.get("parity") or {}).get("passed") if bench else r.get("parity_passed"),
            "top1_accuracy": None if bench else _number(r.get("top1_accuracy")),
            "rounds": read_rounds(r.get("samples_ms"))})
    return out


def _number(value: Any) -> float | None:
    """A finite number, or None (reports write inf and nan as strings: they compare as nothing)."""
    return float(value) if is_finite_number(value) else None


def compare(baseline: Mapping[str, Any], current: Mapping[str, Any], max_slowdown: float = DEFAULT_MAX_SLOWDOWN,
            max_accuracy_drop: float = DEFAULT_MAX_ACCURACY_DROP) -> GateResult:
    """Judge every row present in both reports.

    Timing, with confidence (deploy/bench/stats.py): from each side's per-call samples by round, a bootstrap gives
    the 95 % interval of current ÷ baseline p50 (and of baseline ÷ current img/s). A figure regressed when its whole
    interval lies above 1 + ``max_slowdown``, is ok when it lies at or below, and is inconclusive when it straddles
    it. A row regresses when either figure did, when its parity passed in the baseline and fails now, or when its
    top-1 fell by more than ``max_accuracy_drop`` points (where both sides measured it); it is ok when both figures
    are ok, inconclusive otherwise. A timing that regressed while other processes took more than BUSIER_BY more of
    the CPUs than during the baseline, or while the host ran a fixed reference computation more than BUSIER_BY
    slower, is inconclusive instead, as long as that can explain it: the slowdown may be theirs or the host's (this
    run's load and the baseline's are in each report's environment). What an excuse explains is bounded (``Excuse``):
    a slowdown beyond it regresses all the same. Rows in only one report are listed, never failed.

    Args:
        baseline: A bench or pipeline report (checked with ``check_baseline``).
        current: A bench or pipeline report of this run.
        max_slowdown: Allowed slowdown as a fraction (0.05 = 5 %).
        max_accuracy_drop: Allowed top-1 loss in points.
    """
    old, new = rows(baseline), rows(current)
    envs = baseline.get("environment") or {}, current.get("environment") or {}
    excuses = [e for e in (busier(*envs), host_slower(*envs)) if e]
    excuse = max(excuses, key=lambda e: e.factor) if excuses else None
    judged = tuple(_judge(key, old[key], new[key], max_slowdown, max_accuracy_drop, excuse)
                   for key in new if key in old)
    return GateResult(_describe(baseline), max_slowdown, max_accuracy_drop, judged,
                      tuple(_label(k) for k in old if k not in new), tuple(_label(k) for k in new if k not in old),
                      environment_changes(baseline.get("environment") or {}, current.get("environment") or {}))


def _judge(key: tuple[str, str, int], old: Mapping[str, Any], new: Mapping[str, Any], max_slowdown: float,
           max_drop: float, excuse: Excuse | None = None) -> RowComparison:
    regressed: list[str] = []
    if old["parity_passed"] is True and new["parity_passed"] is False:
        regressed.append("parity failed (it passed in the baseline)")
    if old["top1_accuracy"] is not None and new["top1_accuracy"] is not None:
        drop = (old["top1_accuracy"] - new["top1_accuracy"]) * 100
        if drop > max_drop + _EPS:
            regressed.append(f"top-1 {old['top1_accuracy']:.2%} → {new['top1_accuracy']:.2%} (−{drop:.2f} points, "
                             f"allowed {max_drop:.2f})")
    timing = _judge_timing(old, new, max_slowdown)
    slower = [(why, low) for outcome, why, low in timing.reasons if outcome == "regressed"]
    undecided = [why for outcome, why, _ in timing.reasons if outcome == "inconclusive"]
    if excuse:  # beyond the allowance, but maybe not what changed: within what the excuse explains
        limit = (1 + max_slowdown) * excuse.factor
        undecided = [f"{why}: {excuse.why}" for why, low in slower if low <= limit] + undecided
        slower = [(f"{why}, beyond what {excuse.what} explains (up to {_signed(limit)})", low)
                  for why, low in slower if low > limit]
    regressed += [why for why, _ in slower]
    status = "regressed" if regressed else "inconclusive" if undecided else "ok"
    return RowComparison(*key, status, tuple(regressed + undecided), (old["iterations"], new["iterations"]),
                         (old["p50_ms"], new["p50_ms"]), (old["throughput"], new["throughput"]),
                         (old["cv"], new["cv"]), (old["parity_passed"], new["parity_passed"]),
                         (old["top1_accuracy"], new["top1_accuracy"]), _change(old["p50_ms"], new["p50_ms"]),
                         _change(old["throughput"], new["throughput"]), timing.p50_ci, timing.throughput_ci,
                         timing.seconds)


@dataclass(frozen=True)
class _Timing:
    reasons: tuple[tuple[str, str, float], ...]   # (regressed | inconclusive, why, ratio's lower bound) per figure
                                                  # undecided or failed
    p50_ci: tuple[float, float] | None = None
    throughput_ci: tuple[float, float] | None = None
    seconds: float | None = None


def _judge_timing(old: Mapping[str, Any], new: Mapping[str, Any], max_slowdown: float) -> _Timing:
    """The p50 and throughput of one row, each judged on the interval of its ratio."""
    if not old["rounds"] or not new["rounds"] or not old["p50_ms"] or not new["p50_ms"] or \
            not old["throughput"] or not new["throughput"]:
        side = "the baseline" if not old["rounds"] else "this run"
        return _Timing((("inconclusive", f"timing not compared: {side} has no per-call samples for this row", 0.0),))
    base, cur = replicates(old["rounds"], seed=SEED), replicates(new["rounds"], seed=SEED + 1)
    limit = 1 + max_slowdown
    p50 = judge_ratio(cur.median, base.median, new["p50_ms"] / old["p50_ms"], limit, cur.seconds)
    tp = judge_ratio(cur.mean, base.mean, old["throughput"] / new["throughput"], limit, cur.seconds)
    reasons = []
    for name, j, text in (("p50", p50, f"p50 {old['p50_ms']:.2f} → {new['p50_ms']:.2f} ms"),
                          ("throughput", tp, f"throughput {old['throughput']:.1f} → {new['throughput']:.1f} img/s")):
        if j.outcome == "ok":
            continue
        what = (f"{text} ({name} ratio {_signed(j.ratio)}, 95 % interval {_signed(j.ci95[0])} to "
                f"{_signed(j.ci95[1])}; allowed {_signed(limit)})")
        if j.outcome == "regressed":
            reasons.append(("regressed", what, j.ci95[0]))
        else:
            reasons.append(("inconclusive", f"{what}: the interval straddles the allowance; " + _advice(j), j.ci95[0]))
    seconds = None
    undecided = [j for j in (p50, tp) if j.outcome == "inconclusive"]
    if undecided and all(j.seconds_to_decide is not None for j in undecided):
        seconds = max(j.seconds_to_decide for j in undecided)
    return _Timing(tuple(reasons), p50.ci95, tp.ci95, seconds)


def _advice(j: RatioJudgement) -> str:
    if j.baseline_too_noisy:
        return "the baseline's own spread is wider than the margin: re-measure the baseline longer"
    if j.seconds_to_decide is None:
        return "the ratio sits on the allowance: no duration decides it"
    return (f"about {j.seconds_to_decide:.0f} s of timing per row would decide it (bench --duration "
            f"{max(1, math.ceil(j.seconds_to_decide))})")


def _signed(ratio: float) -> str:
    """A ratio as a change: 1.052 → +5.2%."""
    return f"{ratio - 1:+.1%}"


def _change(old: float | None, new: float | None) -> float | None:
    return new / old - 1 if old is not None and new is not None and old > 0 and new > 0 else None


def _label(key: tuple[str, str, int]) -> str:
    return f"{key[0]} {key[1]} batch {key[2]}"


def _describe(report: Mapping[str, Any]) -> str:
    when = (report.get("environment") or {}).get("timestamp")
    if report.get("format") == BENCH_FORMAT:
        what = f"bench report of {report.get('model')}"
    else:
        what = f"pipeline report of {report.get('out')}"
    return what + (f" ({when})" if when else "")
