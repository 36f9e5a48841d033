"""The regression gate: compare a bench or pipeline report with a baseline one, row by row (runtime, precision, batch).

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
    status: str                                  # ok | regressed | not judged (timing too noisy to judge)
    reasons: tuple[str, ...]                     # why it regressed, or why its timing was not judged
    iterations: tuple[int, int]                  # timed iterations: (baseline, current)
    p50_ms: tuple[float | None, float | None]
    throughput: tuple[float | None, float | None]
    cv: tuple[float | None, float | None]        # coefficient of variation of the latency (std / mean)
    parity_passed: tuple[bool | None, bool | None]
    top1_accuracy: tuple[float | None, float | None]
    p50_change: float | None                     # current / baseline − 1: +0.10 = 10 % slower
    throughput_change: float | None              # current / baseline − 1: −0.10 = 10 % fewer img/s

    @property
    def label(self) -> str:
        return _label((self.runtime, self.precision, self.batch_size))

    def to_dict(self) -> dict[str, Any]:
        sides = ("iterations", "p50_ms", "throughput", "cv", "parity_passed", "top1_accuracy")
        return {"runtime": self.runtime, "precision": self.precision, "batch_size": self.batch_size,
                "label": self.label, "status": self.status, "reasons": list(self.reasons),
                **{f"baseline_{k}": getattr(self, k)[0] for k in sides},
                **{f"current_{k}": getattr(self, k)[1] for k in sides},
                "p50_change": self.p50_change, "throughput_change": self.throughput_change}


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
    def passed(self) -> bool:
        return not self.regressions

    def to_dict(self) -> dict[str, Any]:
        return {"passed": self.passed, "baseline": self.baseline, "max_slowdown": self.max_slowdown,
                "max_accuracy_drop_points": self.max_accuracy_drop, "compared": len(self.rows),
                "regressed": len(self.regressions), "not_judged": sum(r.status == "not judged" for r in self.rows),
                "rows": [r.to_dict() for r in self.rows], "only_in_baseline": list(self.only_in_baseline),
                "only_in_current": list(self.only_in_current), "environment_changes": list(self.environment_changes)}


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
    if report.get("format") == BENCH_FORMAT:
        for r in report["results"]:
            lat = r["latency_ms"] or {}
            out.setdefault((r["runtime"], r["precision"], int(r["batch_size"])), {
                "iterations": int(r.get("iterations") or 0), "p50_ms": _number(lat.get("p50")),
                "cv": _number(lat.get("cv")), "throughput": _number(r["throughput"]),
                "parity_passed": (r.get("parity") or {}).get("passed"), "top1_accuracy": None})
    else:
        for r in report["rows"]:
            out.setdefault((r["runtime"], r["precision"], int(r["batch_size"])), {
                "iterations": int(r.get("iterations") or 0), "p50_ms": _number(r["p50_ms"]),
                "cv": _number(r.get("cv")), "throughput": _number(r["throughput"]),
                "parity_passed": r.get("parity_passed"), "top1_accuracy": _number(r.get("top1_accuracy"))})
    return out


def _number(value: Any) -> float | None:
    """A finite number, or None (reports write inf and nan as strings: they compare as nothing)."""
    return float(value) if is_finite_number(value) else None


def compare(baseline: Mapping[str, Any], current: Mapping[str, Any], max_slowdown: float = DEFAULT_MAX_SLOWDOWN,
            max_accuracy_drop: float = DEFAULT_MAX_ACCURACY_DROP) -> GateResult:
    """Judge every row present in both reports.

    A row regresses when its p50 grew, or its img/s fell, by more than ``max_slowdown`` (a fraction); when its
    parity passed in the baseline and fails now; or when its top-1 fell by more than ``max_accuracy_drop`` points
    (where both sides measured it). Timing is judged only when both sides' coefficient of variation is at most
    ``max_slowdown``: beyond that the noise alone can produce the difference, so the row is "not judged" (parity
    and accuracy are still judged). Rows in only one report are listed, never failed.

    Args:
        baseline: A bench or pipeline report (checked with ``check_baseline``).
        current: A bench or pipeline report of this run.
        max_slowdown: Allowed slowdown as a fraction (0.05 = 5 %).
        max_accuracy_drop: Allowed top-1 loss in points.
    """
    old, new = rows(baseline), rows(current)
    judged = tuple(_judge(key, old[key], new[key], max_slowdown, max_accuracy_drop) for key in new if key in old)
    return GateResult(_describe(baseline), max_slowdown, max_accuracy_drop, judged,
                      tuple(_label(k) for k in old if k not in new), tuple(_label(k) for k in new if k not in old),
                      environment_changes(baseline.get("environment") or {}, current.get("environment") or {}))


def _judge(key: tuple[str, str, int], old: Mapping[str, Any], new: Mapping[str, Any], max_slowdown: float,
           max_drop: float) -> RowComparison:
    p50_change = _change(old["p50_ms"], new["p50_ms"])
    tp_change = _change(old["throughput"], new["throughput"])
    regressed: list[str] = []
    if old["parity_passed"] is True and new["parity_passed"] is False:
        regressed.append("parity failed (it passed in the baseline)")
    if old["top1_accuracy"] is not None and new["top1_accuracy"] is not None:
        drop = (old["top1_accuracy"] - new["top1_accuracy"]) * 100
        if drop > max_drop + _EPS:
            regressed.append(f"top-1 {old['top1_accuracy']:.2%} → {new['top1_accuracy']:.2%} (−{drop:.2f} points, "
                             f"allowed {max_drop:.2f})")
    noisy = [f"{side} CV {cv:.1%}" if cv is not None else f"{side} has no CV"
             for side, cv in (("baseline", old["cv"]), ("current", new["cv"])) if cv is None or cv > max_slowdown]
    unjudged: list[str] = []
    if p50_change is None or tp_change is None:
        unjudged.append("timing missing on one side")
    elif noisy:
        unjudged.append(f"timing not judged: {', '.join(noisy)} > the allowed slowdown {max_slowdown:.1%}; "
                        "measure longer or on a quieter machine")
    else:
        if p50_change > max_slowdown + _EPS:
            regressed.append(f"p50 {old['p50_ms']:.2f} → {new['p50_ms']:.2f} ms ({p50_change:+.1%}, allowed "
                             f"+{max_slowdown:.1%})")
        if -tp_change / (1 + tp_change) > max_slowdown + _EPS:  # the baseline's img/s over the current's, minus 1
            regressed.append(f"throughput {old['throughput']:.1f} → {new['throughput']:.1f} img/s "
                             f"({tp_change:+.1%}, allowed {-max_slowdown / (1 + max_slowdown):.1%})")
    status = "regressed" if regressed else "not judged" if unjudged else "ok"
    return RowComparison(*key, status, tuple(regressed + unjudged), (old["iterations"], new["iterations"]),
                         (old["p50_ms"], new["p50_ms"]), (old["throughput"], new["throughput"]),
                         (old["cv"], new["cv"]), (old["parity_passed"], new["parity_passed"]),
                         (old["top1_accuracy"], new["top1_accuracy"]), p50_change, tp_change)


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


def environment_changes(old: Mapping[str, Any], new: Mapping[str, Any]) -> tuple[str, ...]:
    """What differs between two environment fingerprints that can move a timing: CPU, GPU, library versions and
    thread settings (host names and timestamps are left out)."""
    def flat(env: Mapping[str, Any]) -> dict[str, Any]:
        cpu, gpu = env.get("cpu") or {}, env.get("gpu") or {}
        load = cpu.get("load_average_1min")  # other work on the machine, in half-cores (finer is noise)
        out = {"cpu.model": cpu.get("model"), "cpu.usable_cores": cpu.get("usable_cores"),
               "cpu.load_average_1min": None if load is None else round(load * 2) / 2,
               "gpu.name": gpu.get("name"), "gpu.driver": gpu.get("driver"), "python": env.get("python")}
        out.update({f"libraries.{k}": v for k, v in (env.get("libraries") or {}).items()})
        out.update({f"threads.{k}": v for k, v in (env.get("threads") or {}).items()})
        return out

    a, b = flat(old), flat(new)
    return tuple(f"{k}: {a.get(k)} → {b.get(k)}" for k in dict.fromkeys([*a, *b]) if a.get(k) != b.get(k))
