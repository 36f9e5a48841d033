"""capacity: the Server QPS each runtime × precision sustains at a p99 latency SLO, measured with MLPerf LoadGen."""
from __future__ import annotations

from pathlib import Path

import click

from commands import EXIT_FAILED, EXIT_INTERRUPTED
from commands.options import FiniteRange
from deploy.bench.verdict import DEFAULT_MAX_ACCURACY_DROP
from runtimes.registry import RUNTIME_NAMES

SCENARIO_NAMES = ("server", "offline", "single-stream", "multi-stream")  # deploy/serving/trials.py SCENARIOS


def _names(choices: tuple[str, ...], what: str):
    """A click callback: repeated and/or comma-separated values (or all) → distinct choices, in the given order."""
    def parse(ctx: click.Context, param: click.Parameter, values: tuple[str, ...]) -> tuple[str, ...]:
        items = [v.strip() for value in values for v in value.split(",") if v.strip()]
        if items == ["all"]:
            return choices
        unknown = [v for v in items if v not in choices]
        if unknown or not items:
            raise click.BadParameter(f"unknown {what} {', '.join(map(repr, unknown)) or '(none)'}; expected "
                                     f"{', '.join(choices)} or all")
        return tuple(dict.fromkeys(items))
    return parse


def _share(ctx: click.Context, param: click.Parameter, value: str) -> float:
    text = value.strip()
    try:
        share = float(text[:-1]) / 100 if text.endswith("%") else float(text)
    except ValueError:
        share = float("nan")
    if not 0 <= share <= 0.0075:  # NaN fails too
        raise click.BadParameter(f"expected a share from 0 to 0.75% (0.5% or 0.005), got {value!r}")
    return share


@click.command()
@click.argument("models", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--runtime", "--runtimes", "runtimes", multiple=True, required=True,
              callback=_names(RUNTIME_NAMES, "runtime"),
              help=f"Runtime to measure, repeatable or comma-separated ({', '.join(RUNTIME_NAMES)}); one that cannot "
                   "run here exits 3.")
@click.option("--precision", "precisions", multiple=True, default=("auto",), show_default=True,
              callback=_names(("auto", "bf16"), "precision"),
              help="auto: each file's own precision; bf16: the fp32 file computed in bf16 where a runtime does it "
                   "natively. Repeatable.")
@click.option("--slo-ms", type=FiniteRange(min=0, max=600_000, min_open=True), required=True,
              help="The latency SLO: Server runs must keep p99 at or under this many milliseconds.")
@click.option("--scenario", "scenarios", multiple=True, default=("all",), show_default=True,
              callback=_names(SCENARIO_NAMES, "scenario"),
              help="LoadGen scenarios: server (the search at the SLO), offline, single-stream, multi-stream, or all. "
                   "Repeatable or comma-separated.")
@click.option("--duration", type=FiniteRange(min=1, max=600), default=5.0, show_default=True,
              help="LoadGen's minimum duration of every run, in seconds (Server runs also last until they have "
                   "--min-queries).")
@click.option("--out", type=click.Path(path_type=Path), required=True,
              help="Report folder: capacity.json, capacity.md, capacity.png and trials/ (LoadGen's logs of every "
                   "run). A folder holding a capacity report is refused (see --overwrite).")
@click.option("--overwrite", is_flag=True,
              help="Replace an earlier capacity report in --out; it is set aside and deleted once the new one is "
                   "written (put back if the run fails before that).")
@click.option("--max-batch", type=click.IntRange(1, 256), default=32, show_default=True,
              help="The largest batch the search profiles and may configure.")
@click.option("--max-trials", type=click.IntRange(1, 200), default=12, show_default=True,
              help="Server runs per runtime × precision (the bisection and the other candidates share them).")
@click.option("--max-run", type=FiniteRange(min=5, max=3600), default=60.0, show_default=True,
              help="The search's floor: Server probes stop at the QPS whose --min-queries would take longer than "
                   "this many seconds (the answer is then 'nothing at or above that QPS').")
@click.option("--tail-share", default="0.5%", show_default=True, callback=_share,
              help="Server runs are sized so that one with this share of its queries over the SLO passes LoadGen's "
                   "early stopping (0.5% needs 2,144 queries; 0 gives LoadGen's floor of 459).")
@click.option("--min-queries", type=click.IntRange(1, 10_000_000), default=None,
              help="LoadGen's min_query_count for Server runs, instead of the one --tail-share gives.")
@click.option("--images", type=click.IntRange(1, 100_000), default=256, show_default=True,
              help="Samples in LoadGen's sample library: validation images from the data the ONNX metadata names, "
                   "else seeded random inputs (the report says which).")
@click.option("--threads", type=click.IntRange(1, 1024), default=None,
              help="Cores the executors split between them. Default: the cores this process may use.")
@click.option("--max-accuracy-drop", type=FiniteRange(min=0, max=100), default=DEFAULT_MAX_ACCURACY_DROP,
              show_default=True, help="Top-1 points the recommended row's responses may lose against the reference.")
@click.option("--retry-busy/--no-retry-busy", default=True, show_default=True,
              help="Repeat a failed Server run once (after waiting up to 30 s for quiet) when other processes used "
                   "more than 10% of the CPUs during it.")
@click.option("--seed", type=click.IntRange(0, 2**31 - 1), default=0, show_default=True,
              help="LoadGen's schedule, sample and accuracy-log seeds; the random inputs' seed.")
@click.pass_context
def capacity(ctx: click.Context, models: tuple[Path, ...], out: Path, **opts) -> None:
    """Find the Server QPS each runtime × precision sustains at a p99 latency SLO, with MLPerf LoadGen.

    Each runtime serves through a dynamic batcher and concurrent executors; the search profiles every executor layout,
    bisects LoadGen's Server target QPS for the highest VALID run with p99 <= --slo-ms, and records the probe just
    above it. Offline, SingleStream and MultiStream runs come with it (--scenario). The answer's responses are
    checked against the reference top-1 on the same samples. Runs are far shorter than MLPerf's rules: this is not an
    MLPerf result.

    Exit codes: 0 a recommendation, 1 no runtime × precision met the SLO or one failed (after the report), 2 bad
    usage (an SLO below the fastest single-sample latency included), 3 LoadGen or a runtime not installed, 130
    interrupted (the report holds the runs that finished).
    """
    from deploy.serving.capacity import run_capacity
    from deploy.serving.plan import CapacityPlan
    from deploy.serving.progress import SearchBars, SearchProgress
    from deploy.serving.render import render_text

    plan = CapacityPlan(runtimes=opts["runtimes"], slo_ms=opts["slo_ms"], precisions=opts["precisions"],
                        scenarios=opts["scenarios"], duration_s=opts["duration"], tail_share=opts["tail_share"],
                        min_queries=opts["min_queries"], max_trials=opts["max_trials"], max_batch=opts["max_batch"],
                        max_run_s=opts["max_run"],
                        images=opts["images"], threads=opts["threads"], max_accuracy_drop=opts["max_accuracy_drop"],
                        seed=opts["seed"], retry_busy=opts["retry_busy"], overwrite=opts["overwrite"])
    progress = SearchBars() if ctx.obj["progress"] else SearchProgress()
    report = run_capacity(models, plan, out, progress)
    data = report.to_dict()
    click.echo(render_text(data))
    click.echo(f"Report: {out / 'capacity.md'}  (+ capacity.json, capacity.png, trials/ with LoadGen's logs)")
    if report.interrupted:
        click.echo("Interrupted: the report holds the runs that finished.", err=True)
        ctx.exit(EXIT_INTERRUPTED)
    problems = list(report.failures)
    if "server" in plan.scenarios and report.recommendation is None:
        problems.append(data["recommendation_note"])
    if problems:
        click.echo("Error: " + "\n  ".join(problems), err=True)
        ctx.exit(EXIT_FAILED)
