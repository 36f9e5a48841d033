"""alexnet-deploy command line: the command group, logging, and the one mapping from error to exit code.

The commands live in commands/, one module each (click only: options → config → one library call → render).
"""
from __future__ import annotations

import errno
import logging
import os
import sys

import click

from commands import EXIT_FAILED, EXIT_INTERRUPTED, exit_code
from commands.bench import bench
from commands.capacity import capacity
from commands.export import export
from commands.inspect import inspect
from commands.pipeline import pipeline
from commands.predict import predict
from commands.train import train
from commands.triton import triton


class ToolkitGroup(click.Group):
    """Turns every expected failure into one ``Error:`` line and its exit code (commands/__init__.py), never a
    traceback: the toolkit's own errors, Ctrl-C, and what the OS says (a full disk, a denied permission)."""

    def invoke(self, ctx: click.Context):
        from core.errors import ToolkitError

        try:
            return super().invoke(ctx)
        except ToolkitError as e:
            self._fail(ctx, str(e), exit_code(e))
        except KeyboardInterrupt:
            self._fail(ctx, "interrupted.", EXIT_INTERRUPTED)
        except MemoryError:
            self._fail(ctx, "out of memory: use smaller batch sizes or fewer images", EXIT_FAILED)
        except OSError as e:
            where = f": {e.filename}" if e.filename else ""
            self._fail(ctx, f"{e.strerror or errno.errorcode.get(e.errno or 0, str(e))}{where}", EXIT_FAILED)

    @staticmethod
    def _fail(ctx: click.Context, message: str, code: int) -> None:
        # Under torchrun every rank fails alike, so rank 0 speaks for all of them.
        if ctx.invoked_subcommand != "train" or os.environ.get("RANK", "0") == "0":
            click.echo(f"Error: {message}", err=True)
        ctx.exit(code)


@click.group(cls=ToolkitGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option("-v", "--verbose", is_flag=True, help="Debug logging.")
@click.option("-q", "--quiet", is_flag=True, help="Only warnings and errors; no progress bars.")
@click.pass_context
def main(ctx: click.Context, verbose: bool, quiet: bool) -> None:
    """Train AlexNet, export it to validated ONNX and run it on PyTorch, ONNX Runtime, OpenVINO and TensorRT."""
    from tqdm.contrib.logging import logging_redirect_tqdm

    from core.host import tune_allocator

    for stream in (sys.stdout, sys.stderr):  # a file name that is not UTF-8 must not crash a strict terminal
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="backslashreplace")
    level = logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO
    logging.basicConfig(level=level, format="%(message)s", stream=sys.stderr)
    ctx.with_resource(logging_redirect_tqdm())  # log lines print above progress bars instead of through them
    ctx.obj = {"progress": not quiet and sys.stderr.isatty() or bool(verbose)}
    tune_allocator()  # process-wide malloc thresholds, set by the entry point only: torch eager 30-50 % faster


for command in (train, export, bench, predict, pipeline, triton, inspect, capacity):
    main.add_command(command)

if __name__ == "__main__":
    main()
