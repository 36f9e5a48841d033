"""The capacity report as Markdown (capacity.md) and as terminal lines (strings only)."""
from __future__ import annotations

from typing import Any

from deploy.render import config_text, fixed_width, ms, pct
from deploy.serving.sizing import passing_queries


def recommendation_text(data: dict[str, Any]) -> str:
    rec = data["recommendation"]
    if rec is None:
        return f"No recommendation: {data['recommendation_note']}."
    agreement = f"; top-1 agreement {pct(rec['agreement'])}" if rec.get("agreement") is not None else ""
    return (f"Recommended at p99 <= {data['slo_ms']:g} ms: {rec['runtime']} {rec['precision']} "
            f"({_name(rec['model'])}): {rec['server_max_qps']:g} QPS, p99 {ms(rec['server_p99_ms'])} ms, "
            f"{config_text(rec['config'])}{agreement}.")


def _name(path: str) -> str:
    return path.replace("\\", "/").rsplit("/", 1)[-1]


def row_cells(r: dict[str, Any]) -> list[str]:
    """One capacity row's cells under HEADER (capacity.md, the terminal, the pipeline's report.md)."""
    above = r.get("probe_above")
    above_text = "-" if not above else (f"{above['target_qps']:g} QPS: {'VALID' if above['valid'] else 'INVALID'}, "
                                        f"p99 {ms(above['p99_ms'])} ms")
    ss, mstream = r.get("single_stream") or {}, r.get("multi_stream") or {}
    acc = r.get("accuracy") or {}
    qps = "-" if r.get("server_max_qps") is None else f"{r['server_max_qps']:g}"
    if r["status"] != "measured":
        qps = f"{r['status']}" + (f": {r['reason']}" if r.get("reason") else "") + (
            f" ({qps} so far)" if r.get("server_max_qps") is not None else "")
    return [r["runtime"], r["precision"], _name(r["model"]), qps,
            " / ".join(ms(r.get(k)) for k in ("server_p50_ms", "server_p99_ms", "server_p999_ms")),
            pct(r.get("queue_wait_share")), config_text(r.get("config")), above_text,
            "-" if r.get("offline_samples_per_s") is None else f"{r['offline_samples_per_s']:.1f}",
            f"{ms(ss.get('p50_ms'))} / {ms(ss.get('p90_ms'))}", ms(mstream.get("p99_ms")),
            pct(acc.get("agreement")) + (f" ({acc['checked']})" if acc.get("checked") else "")]


HEADER = ["runtime", "precision", "file", "Server QPS at SLO", "p50 / p99 / p99.9 ms", "queue wait", "configuration",
          "probe above", "Offline samples/s", "SingleStream p50 / p90 ms", "MultiStream p99 ms", "agreement (n)"]


def render_text(data: dict[str, Any]) -> str:
    """The rows as a fixed-width table, then the recommendation."""
    rows = [HEADER] + [row_cells(r) for r in data["results"]]
    lines = [f"Capacity at p99 <= {data['slo_ms']:g} ms ({data['qsl']['source']}):", *fixed_width(rows, {0, 1, 2, 6})]
    lines += [f"  {r['runtime']} {r['precision']}: {r['server_note']}" for r in data["results"]
              if r.get("server_note")]
    lines += [f"Skipped {k}: {v}" for k, v in data["skipped"].items()]
    lines.append(recommendation_text(data))
    if data["partial"]:
        lines.append("Partial report: the run was interrupted; it holds the runs that finished.")
    return "\n".join(lines)


def render_markdown(data: dict[str, Any]) -> str:
    lg, qsl = data["loadgen"], data["qsl"]
    tail = f"{lg['tail_share']:.2%} of them" if lg["tail_share"] else "none"
    out = [f"# Capacity at p99 <= {data['slo_ms']:g} ms", "", f"**{recommendation_text(data)}**", ""]
    if data["partial"]:
        out += ["*Partial report: the run was interrupted; it holds the runs that finished.*", ""]
    warning = busy_warning(data)
    out += [warning, ""] if warning else []
    out += ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    out += ["| " + " | ".join(c.replace("|", "/") for c in row_cells(r)) + " |" for r in data["results"]]
    out += [""] + [f"- {r['runtime']} {r['precision']}: {r['server_note']}" for r in data["results"]
                   if r.get("server_note")]
    out += [f"- skipped {k}: {v}" for k, v in data["skipped"].items()]
    out += [_simulated_line(r) for r in data["results"] if r.get("simulated")]
    out += ["", "## How it was measured", "",
            f"- Samples: {qsl['samples']} — {qsl['source']}. Responses are checked against {qsl['reference']}.",
            f"- MLPerf LoadGen {lg['version']} ({lg['package']}), scenarios {', '.join(data['scenarios'])}; every run "
            f"lasts at least {lg['min_duration_s']:g} s. {lg['note']}",
            f"- Server: Poisson arrivals at the target QPS, p99 <= {data['slo_ms']:g} ms. A run is VALID when "
            f"LoadGen's early-stopping check (a binomial test at 99 % confidence) shows the p99 under the target: "
            f"with t queries over it a run needs at least h(t) + t queries ({passing_queries(0)} with none over). "
            f"Each Server run has at least {lg['server_min_queries']} queries, enough to pass with "
            f"{tail} over the SLO, so it lasts max({lg['min_duration_s']:g} s, "
            f"{lg['server_min_queries']} / QPS); below {lg['server_min_queries']} / {data['plan']['max_run_s']:g} s "
            f"QPS a run is cut to --max-run ({data['plan']['max_run_s']:g} s) of queries, never below "
            f"{passing_queries(0)}, and then allows fewer queries over the SLO.",
            "- Search: each executor layout's batch latency is profiled with every executor busy; the batcher is "
            "simulated on those latencies (Poisson arrivals, each max batch and queue delay, plus the time a "
            "request spends outside the executors) and each layout's best setting is a candidate, best first, "
            "then the largest max batch whose latency fits twice in the SLO; the first is bisected on the target "
            f"QPS until the failing probe is within {data['plan']['ratio']:g}x of the answer, each other candidate "
            "(and a half batch and a queue delay of the winner) first runs at 1.05x the best answer and is dropped "
            "if it fails.",
            f"- Accuracy: LoadGen logs up to 512 responses of every run (top-1 class, mlperf_log_accuracy.json); the "
            f"answer's are compared with the reference top-1 of the same samples (budget: "
            f"{data['plan']['max_accuracy_drop']:g} top-1 points).", "",
            "![p99 latency against offered QPS](capacity.png)", "", "## Every LoadGen run", "",
            "| runtime | precision | run | scenario | target QPS | configuration | result | p99 ms | queries | over SLO"
            " |",
            "|---|---|---|---|---:|---|---|---:|---:|---:|"]
    for r in data["results"]:
        for t in r["trials"]:
            target = f"{t['settings']['target_qps']:g}" if t["scenario"] == "server" else "-"
            out.append(f"| {r['runtime']} | {r['precision']} | [{_name(t['folder'])}]({t['loadgen_summary']}) | "
                       f"{t['scenario']} | {target} | {config_text(t['config'])} | {t['validity']} | "
                       f"{ms(t['p99_ms'])} | {t['queries']} | {t.get('overlatency_queries') or '-'} |")
    return "\n".join(out) + "\n"


def busy_warning(data: dict[str, Any]) -> str | None:
    """The line that says the machine was busy during the run, naming the rows measured while it was, or None."""
    warning = ((data.get("environment") or {}).get("load") or {}).get("warning")
    busy = [f"{r['runtime']} {r['precision']} ({r['load']['other_processes_cpu_share'] or 0:.0%} other processes, "
            f"{r['load']['steal_share'] or 0:.0%} steal)" for r in data["results"] if (r.get("load") or {}).get("busy")]
    if not warning and not busy:
        return None
    return (f"*Warning: {warning or 'the machine was busy while some rows were measured'}"
            + (f"; busy rows: {', '.join(busy)}" if busy else "") + ".*")


def _simulated_line(r: dict[str, Any]) -> str:
    """What the simulated batcher predicted for a row, beside Offline: how much of it any setting keeps at the SLO."""
    sim, offline = r["simulated"], r.get("offline_samples_per_s")
    share = f" = {sim['qps'] / offline:.2f}x Offline" if offline else ""
    return (f"- {r['runtime']} {r['precision']}: the simulated batcher's best is {sim['qps']:g} QPS{share} "
            f"(p99 {ms(sim['p99_ms'])} ms, mean batch {sim['mean_batch']:g}, {config_text(sim['config'])}; "
            f"{ms(sim['overhead_ms'])} ms per request outside the executors)")
