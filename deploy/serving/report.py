"""The capacity report: one row per runtime × precision (Offline, SingleStream, MultiStream, the Server answer at the
SLO with its configuration and the probe above it), the recommendation, written as capacity.json/.md/.png."""
from __future__ import annotations

import logging
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from core.errors import ToolkitError
from core.fileio import write_json_atomic, write_text_atomic
from core.load import LoadMonitor
from core.onnx_file import model_sha256
from deploy.formats import CAPACITY_FORMAT, CAPACITY_FORMAT_VERSION
from deploy.serving.trials import LOADGEN_VERSION

log = logging.getLogger(__name__)
REPORT_NAMES = ("capacity.json", "capacity.md", "capacity.png", "trials")
NOT_MLPERF = ("These LoadGen runs are far shorter than MLPerf Inference's rules require (600 s and more per run, "
              "with audits): this is a capacity measurement with MLPerf's load generator, not an MLPerf result.")


class CapacityRecord:
    """The rows measured so far and how to write them."""

    def __init__(self, out_dir: Path, plan, sample_set, skipped: dict[str, str], cores: int, loadgen: str) -> None:
        self.out_dir, self.plan, self.sample_set, self.skipped, self.cores = out_dir, plan, sample_set, skipped, cores
        self.rows: list[dict[str, Any]] = []
        self.created = datetime.now(timezone.utc).isoformat(timespec="seconds")
        self.load = LoadMonitor(canary=True)  # a busy machine moves every figure: the report says how busy it was

    def add(self, row: dict[str, Any]) -> None:
        self.rows.append(row)

    def failed_row(self, runner, reason: str) -> dict[str, Any]:
        row = base_row(runner, None)
        row.update(status="failed", reason=reason)
        return row

    def measure(self, runner, p50_ms: float, progress) -> dict[str, Any]:
        """Measure one target into a row; a runtime failure is recorded in the row (and in failures()), Ctrl-C keeps
        the row's finished trials and is raised again."""
        row = base_row(runner, p50_ms)
        self.rows.append(row)
        try:
            fill_row(row, runner, p50_ms)
            row["status"] = "measured"
        except ToolkitError as e:
            row.update(status="failed", reason=str(e))
            log.error("%s: %s", runner.target.label, e)
        except KeyboardInterrupt:
            row["status"] = "interrupted"
            if row.get("server_max_qps") is None:
                _best_so_far(row, runner)
            raise
        finally:
            row["trials"] = [t.to_dict() for t in runner.trials]
            runner.close()
            row["load"] = self.load.mark().to_dict()
        return row

    def failures(self) -> list[str]:
        return [f"{r['runtime']} {r['precision']}: {r['reason']}" for r in self.rows if r["status"] == "failed"]

    def to_dict(self, wall_s: float, partial: bool) -> dict[str, Any]:
        from core.environment import collect_environment

        rec, note = recommend(self.rows, self.plan.slo_ms)
        plan = self.plan
        return {
            "format": CAPACITY_FORMAT, "format_version": CAPACITY_FORMAT_VERSION, "created": self.created,
            "slo_ms": plan.slo_ms, "scenarios": list(plan.scenarios), "partial": partial,
            "loadgen": {"package": "mlcommons-loadgen", "version": _installed_loadgen(), "pinned": LOADGEN_VERSION,
                        "min_duration_s": plan.duration_s, "server_min_queries": plan.server_queries,
                        "tail_share": plan.tail_share, "server_target_latency_percentile": 0.99,
                        "early_stopping_confidence": 0.99, "note": NOT_MLPERF},
            "plan": plan.to_dict(), "cores": self.cores, "qsl": self.sample_set.to_dict(),
            "results": self.rows, "recommendation": rec, "recommendation_note": note,
            "skipped": self.skipped, "plot": "capacity.png", "wall_s": round(wall_s, 1),
            "environment": {**collect_environment(), "load": self.load.summary()}}

    def write(self, wall_s: float, partial: bool) -> dict[str, Any]:
        """capacity.json, capacity.md and capacity.png, each atomically; returns the JSON's content."""
        from deploy.serving.plots import plot_capacity
        from deploy.serving.render import render_markdown

        data = self.to_dict(wall_s, partial)
        write_json_atomic(self.out_dir / "capacity.json", data)
        write_text_atomic(self.out_dir / "capacity.md", render_markdown(data))
        plot_capacity(self.out_dir / "capacity.png", data)
        return data


def base_row(runner, p50_ms: float | None) -> dict[str, Any]:
    """A row's identity and the keys every row carries (None until measured)."""
    t = runner.target
    return {"runtime": t.runtime, "precision": t.precision or t.info.precision, "model": str(t.model),
            "sha256": model_sha256(t.model, t.info.external_data), "file_precision": t.info.precision,
            "lrn": t.info.meta.lrn if t.info.meta else None, "status": "running", "reason": None,
            "single_sample_p50_ms": p50_ms, "offline_samples_per_s": None, "server_max_qps": None,
            "server_p99_ms": None, "config": None, "loadgen_summary": None, "valid": False, "probe_above": None,
            "trials": []}


def fill_row(row: dict[str, Any], runner, p50_ms: float) -> None:
    scenarios = runner.plan.scenarios
    profiles = runner.profiles() if {"server", "offline", "multi-stream"} & set(scenarios) else []
    row["profiles"] = [p.to_dict() for p in profiles]
    if "single-stream" in scenarios:
        row["single_stream"] = runner.single_stream(p50_ms)
    if "offline" in scenarios:
        row["offline"] = runner.offline(profiles)
        row["offline_samples_per_s"] = row["offline"]["samples_per_s"]
    if "multi-stream" in scenarios:
        row["multi_stream"] = runner.multi_stream(profiles)
    if "server" in scenarios:
        _server(row, runner, profiles, p50_ms)


def _server(row: dict[str, Any], runner, profiles, p50_ms: float) -> None:
    slo = runner.plan.slo_ms
    if p50_ms > slo:
        row["server_note"] = f"not searched: one sample alone takes {p50_ms:.2f} ms (p50), above the SLO"
        return
    winner, edge = runner.server(profiles, p50_ms)
    best, above = edge.best, edge.above
    row["server_trials"] = len(edge.trials)
    if runner.simulated:
        row["simulated"] = runner.simulated
    if best is None:
        row["server_note"] = (f"no LoadGen Server run met p99 <= {slo:g} ms" + (
            f" (lowest probe {min(t.settings.target_qps for t in edge.trials):g} QPS)" if edge.trials else ""))
        return
    _record_answer(row, runner, best, above)
    if above is None:
        row["server_note"] = "no failing probe above the answer within --max-trials: the edge was not reached"


def _record_answer(row: dict[str, Any], runner, best, above) -> None:
    slo = runner.plan.slo_ms
    row.update(server_max_qps=best.settings.target_qps, server_completed_qps=best.result["completed_qps"],
               server_p50_ms=best.result["p50_ms"], server_p99_ms=best.result["p99_ms"],
               server_p999_ms=best.result["p999_ms"], queue_wait_share=best.server.get("queue_wait_share"),
               server_mean_batch=best.server.get("mean_batch"), server_batch_sizes=best.server.get("batch_sizes"),
               config=best.config.to_dict(), loadgen_summary=best.to_dict()["loadgen_summary"], valid=best.valid,
               server_queries=best.result["queries"], accuracy=runner.accuracy(best))
    if above is not None:
        row["probe_above"] = {"target_qps": above.settings.target_qps, "p99_ms": above.result["p99_ms"],
                              "valid": above.valid, "met_slo": above.met(slo),
                              "ratio": above.settings.target_qps / best.settings.target_qps,
                              "loadgen_summary": above.to_dict()["loadgen_summary"]}


def _best_so_far(row: dict[str, Any], runner) -> None:
    """An interrupted search: the highest Server run that met the SLO so far (its edge not yet found)."""
    slo = runner.plan.slo_ms
    met = [t for t in runner.trials if t.scenario == "server" and t.met(slo)]
    if met:
        best = max(met, key=lambda t: t.settings.target_qps)
        _record_answer(row, runner, best, None)
        row["server_note"] = "interrupted: the best Server run so far; the search had not reached its edge"


def recommend(rows: list[dict[str, Any]], slo_ms: float) -> tuple[dict[str, Any] | None, str]:
    """The row with the most Server QPS at the SLO whose answer was VALID and whose responses stayed within the
    accuracy budget, and a sentence saying why (or why none)."""
    measured = [r for r in rows if r.get("server_max_qps") is not None and r.get("valid")]
    eligible = [r for r in measured if (r.get("accuracy") or {}).get("within_budget")]
    if not eligible:
        why = ("no runtime × precision met the SLO" if not measured else
               "every configuration that met the SLO lost more top-1 than the accuracy budget allows")
        return None, f"{why} (p99 <= {slo_ms:g} ms)"
    best = max(eligible, key=lambda r: r["server_max_qps"])
    keys = ("runtime", "precision", "model", "sha256", "config", "server_max_qps", "server_p99_ms", "loadgen_summary",
            "offline_samples_per_s")
    rec = {k: best.get(k) for k in keys}
    rec["agreement"] = best["accuracy"].get("agreement")
    left_out = len(measured) - len(eligible)
    note = (f"{best['runtime']} {best['precision']}: {best['server_max_qps']:g} QPS at p99 "
            f"{best['server_p99_ms']:.1f} ms <= {slo_ms:g} ms")
    if left_out:
        note += f"; {left_out} row(s) that met the SLO but lost more top-1 than the budget left out"
    return rec, note


def _installed_loadgen() -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("mlcommons-loadgen")
    except PackageNotFoundError:
        return None
