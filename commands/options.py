"""Option parsers and options shared by several commands, and the settings they turn into."""
from __future__ import annotations

from pathlib import Path

import click

from core.contract import MAX_BATCH
from deploy.bench.verdict import DEFAULT_MAX_ACCURACY_DROP  # a constant of a light module (no adapter, no torch)
from runtimes.registry import RUNTIME_NAMES  # names only: the adapters are imported on first use


def floats(n: int):
    """A click callback parsing ``a,b[,c]`` into a tuple of ``n`` floats."""
    def parse(ctx: click.Context, param: click.Parameter, value: str | None):
        if value is None:
            return None
        try:
            parts = tuple(float(v) for v in value.split(","))
        except ValueError:
            raise click.BadParameter(f"expected {n} comma-separated numbers, got {value!r}") from None
        if len(parts) != n:
            raise click.BadParameter(f"expected {n} comma-separated numbers, got {len(parts)}")
        return parts
    return parse


def list_option(choices: tuple[str, ...], allow_all: bool):
    """A click callback parsing ``a,b`` (or ``all``) into a tuple of distinct ``choices``, in the given order."""
    def parse(ctx: click.Context, param: click.Parameter, value: str) -> tuple[str, ...]:
        items = [v.strip() for v in value.split(",") if v.strip()]
        if allow_all and items == ["all"]:
            return choices
        unknown = [v for v in items if v not in choices]
        if unknown or not items:
            valid = ", ".join(choices) + (" (or all)" if allow_all else "")
            raise click.BadParameter(f"expected a comma-separated list of {valid}; got {value!r}")
        if len(set(items)) != len(items):
            raise click.BadParameter(f"{value!r} names a value twice")
        return tuple(items)
    return parse


def batch_sizes(ctx: click.Context, param: click.Parameter, value: str) -> tuple[int, ...]:
    try:
        sizes = tuple(int(v) for v in value.split(",") if v.strip())
    except ValueError:
        raise click.BadParameter(f"expected comma-separated integers like 1,8,32, got {value!r}") from None
    if not sizes or not all(1 <= s <= MAX_BATCH for s in sizes):
        raise click.BadParameter(f"batch sizes must be integers in 1..{MAX_BATCH} (the exported graphs' bound), got "
                                 f"{value!r}")
    return sizes


def warmup(ctx: click.Context, param: click.Parameter, value: str) -> tuple[int, float]:
    """``N`` → N warm-up iterations; ``2s`` / ``0.5s`` → that many seconds (and at least one iteration)."""
    import math

    text = value.strip().lower()
    try:
        result = (1, float(text[:-1])) if text.endswith("s") else (int(text), 0.0)
    except ValueError:
        result = (-1, -1.0)
    if not (0 <= result[0] <= 1_000_000 and 0 <= result[1] <= 3600 and math.isfinite(result[1])):
        raise click.BadParameter(f"expected a number of iterations (5) or seconds up to an hour (2s), got {value!r}")
    return result


class FiniteRange(click.FloatRange):
    """A float range that also refuses NaN (which passes every comparison, so plain FloatRange lets it through)."""

    def convert(self, value, param, ctx):
        import math

        number = super().convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number.", param, ctx)
        return number


SECONDS = FiniteRange(min=0, max=3600, min_open=True)  # a NaN or infinite duration would never end
RUNTIMES_OPTION = click.option(
    "--runtimes", "--runtime", "runtimes", default="all", show_default=True,
    callback=list_option(RUNTIME_NAMES, allow_all=True),
    help=f"Comma-separated runtimes ({', '.join(RUNTIME_NAMES)}) or all. With all, ones that cannot run here are "
         "listed as skipped; named ones that cannot run exit 3.")
MISMATCH_OPTION = click.option(
    "--allow-checkpoint-mismatch", is_flag=True,
    help="Use the PyTorch checkpoint even when its sha256 differs from the one the ONNX metadata records.")


def _slowdown(ctx: click.Context, param: click.Parameter, value: str) -> float:
    from core.errors import UsageError
    from deploy.bench.gate import parse_slowdown

    try:
        return parse_slowdown(value)
    except UsageError as e:
        raise click.BadParameter(str(e)) from None


def _accuracy_drop(ctx: click.Context, param: click.Parameter, value: float) -> float:
    import math

    if not (math.isfinite(value) and 0 <= value <= 100):  # click's FloatRange lets NaN through
        raise click.BadParameter(f"expected top-1 points from 0 to 100, got {value}")
    return value


def gate_options(baseline_help: str):
    """--baseline, --max-slowdown and --max-accuracy-drop (bench and pipeline)."""
    def decorate(command):
        for option in reversed((
                click.option("--baseline", type=click.Path(exists=True, dir_okay=False, path_type=Path),
                             default=None, help=baseline_help),
                click.option("--max-slowdown", default="5%", show_default=True, callback=_slowdown,
                             help="--baseline: a row whose p50 grew, or whose img/s fell, by more than this (5% or "
                                  "0.05) with 95% confidence fails (exit 1); one whose interval straddles it is "
                                  "inconclusive."),
                click.option("--inconclusive", type=click.Choice(["fail", "pass"]), default="fail",
                             show_default=True,
                             help="--baseline: what an inconclusive row means for CI: fail exits 4 (measure longer: "
                                  "the message says how long), pass exits 0."),
                click.option("--max-accuracy-drop", type=float, default=DEFAULT_MAX_ACCURACY_DROP,
                             show_default=True, callback=_accuracy_drop,
                             help="Top-1 points a row may lose: against the --baseline, and (pipeline) against "
                                  "PyTorch fp32 to be recommended."))):
            command = option(command)
        return command
    return decorate


ROUNDS_OPTION = click.option(
    "--rounds", type=click.IntRange(1, 1000), default=5, show_default=True,
    help="Timed rounds, interleaved across every runtime × batch size (A B C, A B C, ...); the duration is split over "
         "them and the 95% intervals resample them.")


def finish_gate(ctx: click.Context, gate: dict | None, inconclusive: str) -> None:
    """Exit for a gate that did not pass: 1 for a regression, 4 for an inconclusive row unless
    ``--inconclusive pass``."""
    from commands import EXIT_FAILED, EXIT_INCONCLUSIVE
    from deploy.bench.render import gate_failure

    if gate is None or gate["outcome"] == "pass":
        return
    if gate["outcome"] == "fail":
        click.echo(f"Error: {gate_failure(gate)}", err=True)
        ctx.exit(EXIT_FAILED)
    if inconclusive == "pass":
        click.echo(f"Note: {gate_failure(gate)}; passed by --inconclusive pass.", err=True)
        return
    click.echo(f"Error: {gate_failure(gate)}", err=True)
    ctx.exit(EXIT_INCONCLUSIVE)


def runtime_options(opts: dict, precision: str | None = None):
    """The RuntimeOptions that a command's options describe (absent options keep their defaults)."""
    from runtimes.options import RuntimeOptions

    return RuntimeOptions(
        threads=opts.get("threads"), device=opts.get("device", "auto"), precision=precision,
        graph_optimization=opts.get("graph_optimization", "all"), compile=opts.get("compile_", False),
        allow_tf32=opts.get("allow_tf32", False), cudnn_algo_search=opts.get("cudnn_algo_search", "EXHAUSTIVE"),
        cuda_graph=opts.get("cuda_graph", False), strict=not opts.get("allow_cpu_nodes", False),
        engine_cache=str(opts["engine_cache"]) if opts.get("engine_cache") else None,
        workspace_mb=opts.get("workspace_mb", 1024), optimization_level=opts.get("optimization_level"))


def write_reports(files: dict) -> None:
    """Each requested report file (path → a function giving its text), written atomically."""
    from core.fileio import write_text_atomic

    for path, text in files.items():
        if path is not None:
            write_text_atomic(path, text())
            click.echo(f"Wrote {path}")
