"""The deployment verdict: which runtime × precision to ship for latency and for throughput, within an accuracy budget.

Pure functions over a pipeline report's rows (deploy/pipeline_report.py): no I/O, no measurement.
"""
from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from core.contract import PRECISIONS
from runtimes.registry import RUNTIME_NAMES  # names only: no adapter is imported

DEFAULT_MAX_ACCURACY_DROP = 0.5   # top-1 points a row may lose against PyTorch fp32 and still be recommended
REFERENCE = ("torch", "fp32")     # the row every speedup is measured against
OBJECTIVES = ("latency", "throughput")  # and "capacity" when the report holds a capacity measurement
# Deployment simplicity, simplest first: one small wheel running a portable file; then the whole training framework;
# then the GPU stacks (a driver and CUDA), TensorRT last (an engine built per GPU model and TensorRT version).
SIMPLICITY = ("onnxruntime", "openvino", "torch", "onnxruntime-cuda", "tensorrt")
TIE_RULE = ("a row whose 95% interval overlaps the fastest one's is a tie within measurement noise; a tie goes to the "
            "higher top-1, then the simpler runtime (" + ", ".join(SIMPLICITY) + "), then the precision first in "
            "fp32, fp16, int8, bf16; without intervals, equal figures go to the higher top-1, then the lower p99")
_EPS = 1e-9  # a delta that equals the budget up to float rounding is within it


@dataclass(frozen=True)
class Choice:
    """One runtime × precision picked for an objective, with its figure and how it compares with PyTorch fp32."""
    objective: str                        # latency | throughput
    runtime: str
    precision: str
    batch_size: int
    model: str | None                     # the file it ran (the checkpoint for torch rows)
    sha256: str | None                    # of ``model``, from the report's artifacts; None if not listed
    value: float                          # p50 ms (latency) or img/s (throughput)
    unit: str                             # "ms" | "img/s"
    speedup_vs_torch_fp32: float | None   # > 1 = better than PyTorch fp32 at this batch; None without that row
    accuracy_delta_points: float          # top-1 minus PyTorch fp32's, in points
    runner_up: "Choice | None" = None     # the next best runtime × precision (it has no runner-up of its own)
    ci95: tuple[float, float] | None = None   # 95 % interval of ``value``
    tied_with: tuple[str, ...] = ()       # "runtime precision" rows within measurement noise of the fastest
    tie_break: str | None = None          # why this one of the tied rows: "higher top-1", "simpler runtime", ...
    detail: dict[str, Any] | None = None  # capacity: the SLO, the serving configuration, p99, the failed probe above

    def to_dict(self) -> dict[str, Any]:
        out = {k: getattr(self, k) for k in ("objective", "runtime", "precision", "batch_size", "model", "sha256",
                                             "value", "unit", "speedup_vs_torch_fp32", "accuracy_delta_points")}
        out.update(ci95=None if self.ci95 is None else list(self.ci95), tied_with=list(self.tied_with),
                   tie_break=self.tie_break, detail=self.detail)
        out["runner_up"] = None if self.runner_up is None else {
            k: v for k, v in self.runner_up.to_dict().items() if k != "runner_up"}
        return out


@dataclass(frozen=True)
class Recommendation:
    """The verdict for each objective (None when nothing qualifies, with the reason in ``unmet``)."""
    max_accuracy_drop_points: float
    latency: Choice | None
    throughput: Choice | None
    unmet: dict[str, str]                          # objective → why nothing qualifies
    notes: tuple[str, ...]                         # how the figures were taken (batch used, missing reference)
    excluded: tuple[dict[str, str], ...]           # runtime, precision, reason: measured but not eligible
    not_measured: tuple[dict[str, Any], ...]       # runtime, precision (None = every one), status, reason
    capacity: Choice | None = None                 # the most Server QPS at the SLO (pipeline --slo-ms)
    capacity_measured: bool = False                # whether the report holds a capacity measurement at all

    def to_dict(self) -> dict[str, Any]:
        measured = {"capacity": self.capacity.to_dict() if self.capacity else None} if self.capacity_measured else {}
        return {"max_accuracy_drop_points": self.max_accuracy_drop_points, "tie_rule": TIE_RULE,
                "latency": self.latency.to_dict() if self.latency else None,
                "throughput": self.throughput.to_dict() if self.throughput else None, **measured,
                "unmet": dict(self.unmet), "notes": list(self.notes), "excluded": [dict(e) for e in self.excluded],
                "not_measured": [dict(n) for n in self.not_measured]}


def recommend(report: Mapping[str, Any], max_accuracy_drop: float = DEFAULT_MAX_ACCURACY_DROP) -> Recommendation:
    """The best runtime × precision for latency and for throughput among the rows that may be shipped.

    A row qualifies when its parity checks passed and its task-level top-1 is at most ``max_accuracy_drop`` points
    below PyTorch fp32's (``accuracy_delta_points >= -max_accuracy_drop``); a row without task-level parity does
    not qualify, since nothing says what it does to accuracy. Latency is the lowest p50 at batch 1 (the smallest
    measured batch when 1 was not measured); throughput the highest img/s at the largest measured batch. Ties:
    see ``TIE_RULE``.

    Args:
        report: A pipeline report dict with ``rows``, ``artifacts``, ``runtimes`` and ``skipped``.
        max_accuracy_drop: The accuracy budget in top-1 points (default 0.5).

    Returns:
        The recommendation; its ``not_measured`` names every runtime (× precision) that did not run here.
    """
    rows = [r for r in report.get("rows", []) if _measured(r)]
    reasons = {}
    for r in rows:
        reasons.setdefault((r["runtime"], r["precision"]), _ineligible(r, max_accuracy_drop))
    eligible = [r for r in rows if reasons[(r["runtime"], r["precision"])] is None]
    notes: list[str] = []
    choices, unmet = {}, {}
    for objective in OBJECTIVES:
        choice, why = _choose(objective, rows, eligible, report.get("artifacts", []), max_accuracy_drop, notes)
        choices[objective] = choice
        if why:
            unmet[objective] = why
    excluded = tuple({"runtime": n, "precision": p, "reason": why} for (n, p), why in reasons.items() if why)
    capacity = report.get("capacity")
    if capacity:
        choices["capacity"], why = _choose_capacity(capacity, rows, reasons, report.get("artifacts", []))
        if why:
            unmet["capacity"] = why
    return Recommendation(max_accuracy_drop, choices["latency"], choices["throughput"], unmet,
                          tuple(dict.fromkeys(notes)), excluded, not_measured(report), choices.get("capacity"),
                          bool(capacity))


def _choose_capacity(capacity: Mapping[str, Any], rows: list[Mapping[str, Any]], reasons: Mapping[tuple, str | None],
                     artifacts: Sequence[Mapping[str, Any]]) -> tuple[Choice | None, str]:
    """The most Server QPS at the SLO among the VALID answers of runtime × precision pairs that may be shipped
    (the same eligibility as the other objectives: parity and the top-1 budget), and its runner-up."""
    slo = capacity["slo_ms"]
    answered = [r for r in capacity.get("results", []) if r.get("valid") and r.get("server_max_qps")]
    eligible = sorted((r for r in answered if reasons.get((r["runtime"], r["precision"]), "not benched") is None),
                      key=lambda r: (-r["server_max_qps"], _index(SIMPLICITY, r["runtime"])))
    if not eligible:
        return None, (f"no runtime × precision served a VALID LoadGen Server run at p99 <= {slo:g} ms" if not answered
                      else "every runtime × precision that met the SLO is not eligible (see the excluded rows)")
    delta = {(r["runtime"], r["precision"]): r["accuracy_delta_points"] for r in rows}
    torch_qps = next((r["server_max_qps"] for r in answered if (r["runtime"], r["precision"]) == REFERENCE), None)

    def choice(r: Mapping[str, Any], runner_up: Choice | None = None) -> Choice:
        detail = {"slo_ms": slo, "config": r.get("config"), "server_p99_ms": r.get("server_p99_ms"),
                  "probe_above": r.get("probe_above"), "offline_samples_per_s": r.get("offline_samples_per_s"),
                  "loadgen_summary": r.get("loadgen_summary")}
        return Choice("capacity", r["runtime"], r["precision"], int((r.get("config") or {}).get("max_batch") or 1),
                      r.get("model"), r.get("sha256") or _sha256(r.get("model"), artifacts), r["server_max_qps"],
                      "QPS", r["server_max_qps"] / torch_qps if torch_qps else None,
                      delta[(r["runtime"], r["precision"])], runner_up, detail=detail)

    second = next((r for r in eligible[1:] if (r["runtime"], r["precision"]) !=
                   (eligible[0]["runtime"], eligible[0]["precision"])), None)
    return choice(eligible[0], None if second is None else choice(second)), ""


def not_measured(report: Mapping[str, Any]) -> tuple[dict[str, Any], ...]:
    """Runtimes skipped (or failed before any row) and runtime × precision pairs skipped, with the reason."""
    ran = {r["runtime"] for r in report.get("rows", [])}
    out = [{"runtime": name, "precision": None, "status": v["status"], "reason": v["reason"]}
           for name, v in report.get("runtimes", {}).items()
           if v["status"] == "skipped" or (v["status"] == "failed" and name not in ran)]
    out += [{"runtime": s["runtime"], "precision": s["precision"], "status": "skipped", "reason": s["reason"]}
            for s in report.get("skipped", [])]
    return tuple(out)


def _measured(row: Mapping[str, Any]) -> bool:
    return all(isinstance(row.get(k), (int, float)) and math.isfinite(row[k]) and row[k] > 0
               for k in ("p50_ms", "throughput"))


def _ineligible(row: Mapping[str, Any], budget: float) -> str | None:
    """Why a row may not be recommended, or None."""
    if row.get("parity_passed") is None:
        return "no parity check"
    if not row["parity_passed"]:
        failed = sorted(k for k, ok in (row.get("parity") or {}).items() if not ok)
        return "parity failed" + (f" ({', '.join(failed)})" if failed else "")
    delta = row.get("accuracy_delta_points")
    if delta is None:
        return "no task-level parity (top-1 on the validation images not measured)"
    if delta < -budget - _EPS:
        return f"top-1 {delta:+.2f} points vs PyTorch fp32, beyond the {budget:.2f}-point budget"
    return None


def _choose(objective: str, rows: list[Mapping[str, Any]], eligible: list[Mapping[str, Any]],
            artifacts: Sequence[Mapping[str, Any]], budget: float, notes: list[str]) -> tuple[Choice | None, str]:
    """The winner and runner-up for one objective, or None and why nothing qualifies."""
    if not rows:
        return None, "no row was measured"
    batches = sorted({r["batch_size"] for r in rows})
    if objective == "latency":
        batch = 1 if 1 in batches else batches[0]
        if batch != 1:
            notes.append(f"latency: batch 1 was not measured; judged at batch {batch}, the smallest measured")
    else:
        batch = batches[-1]
    ranked = sorted((r for r in eligible if r["batch_size"] == batch), key=lambda r: _rank(objective, r))
    if not ranked:
        return None, (f"no row at batch {batch} passed parity within {budget:.2f} top-1 points of PyTorch fp32 "
                      "(see the excluded rows)")
    tied = [r for r in ranked if _overlaps(_ci(objective, r), _ci(objective, ranked[0]))]
    winner = min(tied, key=_tie_key) if len(tied) > 1 else ranked[0]
    ranked = [winner] + [r for r in ranked if r is not winner]
    reference = next((r for r in rows if (r["runtime"], r["precision"]) == REFERENCE and r["batch_size"] == batch),
                     None)
    if reference is None:
        notes.append(f"no torch fp32 row at batch {batch}: the {objective} speedup is unknown")
    second = next((r for r in ranked[1:] if (r["runtime"], r["precision"]) != (ranked[0]["runtime"],
                                                                             ranked[0]["precision"])), None)
    runner_up = None if second is None else _choice(objective, second, reference, artifacts)
    choice = _choice(objective, winner, reference, artifacts, runner_up)
    others = tuple(dict.fromkeys(f"{r['runtime']} {r['precision']}" for r in tied if r is not winner and
                                 (r["runtime"], r["precision"]) != (winner["runtime"], winner["precision"])))
    if others:
        choice = dataclasses.replace(choice, tied_with=others, tie_break=_why_chosen(winner, tied))
    return choice, ""


def _ci(objective: str, row: Mapping[str, Any]) -> tuple[float, float] | None:
    ci = row.get("p50_ci95" if objective == "latency" else "throughput_ci95")
    return (float(ci[0]), float(ci[1])) if ci else None


def _overlaps(a: tuple[float, float] | None, b: tuple[float, float] | None) -> bool:
    return a is not None and b is not None and a[0] <= b[1] and b[0] <= a[1]


def _tie_key(row: Mapping[str, Any]) -> tuple:
    """Among rows within measurement noise of each other: the higher top-1, the simpler runtime, fp32 first."""
    return (-row["accuracy_delta_points"], _index(SIMPLICITY, row["runtime"]), _index(PRECISIONS, row["precision"]))


def _why_chosen(winner: Mapping[str, Any], tied: Sequence[Mapping[str, Any]]) -> str:
    """Why the tie went to ``winner``, against the row with the best figure (``tied[0]``)."""
    fastest = tied[0]
    if winner is fastest:
        return "the best figure, and first by the tie rule too"
    name = f"{fastest['runtime']} {fastest['precision']}"
    if winner["accuracy_delta_points"] > fastest["accuracy_delta_points"] + _EPS:
        return f"higher top-1 than {name}"
    if _index(SIMPLICITY, winner["runtime"]) < _index(SIMPLICITY, fastest["runtime"]):
        return f"a simpler runtime than {name}"
    return f"precision order ({winner['precision']} before {fastest['precision']})"


def _rank(objective: str, row: Mapping[str, Any]) -> tuple:
    """Sort key: the objective's figure (best first), then the tie rule (TIE_RULE)."""
    figure = row["p50_ms"] if objective == "latency" else -row["throughput"]
    p99 = row.get("p99_ms")
    return (figure, -row["accuracy_delta_points"], p99 if p99 is not None else math.inf,
            _index(RUNTIME_NAMES, row["runtime"]), _index(PRECISIONS, row["precision"]))


def _index(names: Sequence[str], name: str) -> int:
    return names.index(name) if name in names else len(names)  # unknown names after the known ones


def _choice(objective: str, row: Mapping[str, Any], reference: Mapping[str, Any] | None,
            artifacts: Sequence[Mapping[str, Any]], runner_up: Choice | None = None) -> Choice:
    if objective == "latency":
        value, unit = row["p50_ms"], "ms"
        speedup = reference["p50_ms"] / value if reference else None
    else:
        value, unit = row["throughput"], "img/s"
        speedup = value / reference["throughput"] if reference else None
    model = row.get("model")
    return Choice(objective, row["runtime"], row["precision"], row["batch_size"], model, _sha256(model, artifacts),
                  value, unit, speedup, row["accuracy_delta_points"], runner_up, _ci(objective, row))


def _sha256(model: str | None, artifacts: Sequence[Mapping[str, Any]]) -> str | None:
    if model is None:
        return None
    wanted = os.path.normpath(model)
    return next((a["sha256"] for a in artifacts if os.path.normpath(str(a["path"])) == wanted), None)
