"""Data-parallel training over processes that torchrun starts: process group, per-rank device, DDP and reductions.

torchrun (which ``train --nproc-per-node N`` starts) gives each process RANK, LOCAL_RANK, WORLD_SIZE,
LOCAL_WORLD_SIZE and the rendezvous address in its environment. A process without them trains alone, and every
helper here is then a no-op.
"""
from __future__ import annotations

import dataclasses
import logging
import os
import tempfile
from dataclasses import dataclass
from typing import Any, Callable, Mapping, TypeVar

import torch
from torch import nn

from core.errors import ToolkitError, UnavailableError, UsageError
from core.host import die_with_parent, environ_set, resolve_device, usable_cores

log = logging.getLogger(__name__)

T = TypeVar("T")
_ENV_KEYS = ("RANK", "WORLD_SIZE")  # torchrun always sets both; so does a hand-written env:// launch


class WorkerFailedError(ToolkitError):
    """A data-parallel training process failed; its own message is above, its exit status is ours."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code


@dataclass(frozen=True)
class DistContext:
    """This process's place in a data-parallel run; the defaults describe a process training alone."""
    world_size: int = 1
    rank: int = 0                # 0 is the main process: it alone logs, shows progress and writes files
    local_rank: int = 0          # index among the processes on this machine = its GPU index
    local_world_size: int = 1    # processes on this machine
    backend: str | None = None   # "nccl" (CUDA) or "gloo" (CPU) while a process group is up; None when alone
    owns_group: bool = False     # this module created the group, so it destroys it

    @property
    def active(self) -> bool:
        return self.backend is not None

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def env_context(environ: Mapping[str, str] = os.environ) -> DistContext:
    """The launch as torchrun describes it in ``environ`` (no group yet); a lone process when it says nothing."""
    if not launched(environ):
        return DistContext()
    try:
        world, rank = int(environ["WORLD_SIZE"]), int(environ["RANK"])
        local_rank = int(environ.get("LOCAL_RANK", rank))
        local_world = int(environ.get("LOCAL_WORLD_SIZE", world))
    except ValueError:
        raise ToolkitError("RANK, WORLD_SIZE, LOCAL_RANK and LOCAL_WORLD_SIZE must be integers (set by torchrun)") \
            from None
    return DistContext(world, rank, local_rank, local_world)


def launched(environ: Mapping[str, str] = os.environ) -> bool:
    """True in a process that torchrun (or an equivalent env:// launcher) started."""
    return all(key in environ for key in _ENV_KEYS)


def rank_device(name: str, ctx: DistContext) -> torch.device:
    """``--device`` for this process: ``auto`` and ``cuda`` mean GPU LOCAL_RANK when several processes share a machine.

    Raises:
        ToolkitError: a fixed ``cuda:N`` with several local processes, or fewer GPUs than local processes.
    """
    if ctx.local_world_size == 1 or name == "cpu" or (name == "auto" and not torch.cuda.is_available()):
        return resolve_device(name)
    if name not in ("auto", "cuda"):
        resolve_device(name)  # an unknown name gets the usual message first
        raise UsageError(f"--device {name} with {ctx.local_world_size} processes on this machine: each process "
                         "uses the GPU of its local rank; pass --device cuda (or auto), or --device cpu")
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if ctx.local_world_size > gpus:
        # NCCL refuses two processes on one GPU ("Duplicate GPU detected").
        raise UnavailableError(f"{ctx.local_world_size} processes on this machine need one GPU each; {gpus} "
                               f"found. Start at most {gpus} processes, or train on the CPU with --device cpu")
    return resolve_device(f"cuda:{ctx.local_rank}")


def init(device_name: str) -> tuple[DistContext, torch.device]:
    """Join the process group that torchrun describes, if any, and pick this process's device.

    CUDA devices use NCCL, the CPU uses gloo. Every rank reaches the same verdict on bad settings, so none is left
    waiting for a failed peer.

    Returns:
        The context (a lone process when not launched by torchrun) and the device to train on.
    """
    ctx = env_context()
    device = rank_device(device_name, ctx)
    if not launched():
        return ctx, device
    die_with_parent()  # a torchrun worker must not outlive its agent, even when the agent is killed with -9
    import torch.distributed as dist

    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())  # NCCL and DDP need the index
    backend = "nccl" if device.type == "cuda" else "gloo"
    if dist.is_initialized():  # a caller's own group: use it, leave it to them
        return dataclasses.replace(ctx, backend=dist.get_backend()), device
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(backend, device_id=device if device.type == "cuda" else None)
    log.info("data-parallel: %d processes (%s), this is rank %d on %s", ctx.world_size, backend, ctx.rank, device)
    return dataclasses.replace(ctx, backend=backend, owns_group=True), device


def shutdown(ctx: DistContext) -> None:
    """Leave the process group that :func:`init` created (idempotent)."""
    import torch.distributed as dist

    if ctx.owns_group and dist.is_initialized():
        dist.destroy_process_group()


def wrap(model: nn.Module, ctx: DistContext) -> nn.Module:
    """``model`` in DistributedDataParallel (gradients averaged over the ranks in backward), or itself when alone."""
    if not ctx.active:
        return model
    from torch.nn.parallel import DistributedDataParallel

    device = next(model.parameters()).device
    return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)


def all_reduce_sum(tensor: torch.Tensor, ctx: DistContext) -> torch.Tensor:
    """Sum ``tensor`` over the ranks in place (every rank gets the same bits back); returns it."""
    if ctx.active:
        import torch.distributed as dist

        dist.all_reduce(tensor)
    return tensor


def barrier(ctx: DistContext) -> None:
    if ctx.active:
        import torch.distributed as dist

        dist.barrier()


def run_on_main(fn: Callable[[], T], ctx: DistContext) -> T:
    """``fn()`` on rank 0 only, its result handed to every rank; a ToolkitError it raises is raised on every rank.

    For work that must happen once (scanning the images, generating the built-in data, naming the run folder)
    and whose result every rank needs. The result travels pickled between the run's own processes.
    """
    if not ctx.active:
        return fn()
    import torch.distributed as dist

    box: list[Any] = [None]
    if ctx.is_main:
        try:
            box[0] = fn()
        except ToolkitError as e:
            box[0] = e
    dist.broadcast_object_list(box, src=0)
    if isinstance(box[0], ToolkitError):
        raise box[0]
    return box[0]


def launch(nproc: int, argv: list[str]) -> None:
    """Run this program again (``argv``: its script and arguments) in ``nproc`` processes through torchrun; wait.

    The calling process becomes torchrun's agent. The workers sit in sessions of their own, so a Ctrl-C (or SIGTERM)
    reaches the agent alone, which passes one SIGINT to each worker: they save their last epoch as a lone process
    would. ``--standalone`` rendezvouses on a free local port, so runs side by side do not collide.

    Raises:
        WorkerFailedError: a worker failed (it has printed its own error); ``exit_code`` is its exit status.
        KeyboardInterrupt: the launch was interrupted, and the workers have stopped.
    """
    from torch.distributed import run as torchrun
    from torch.distributed.elastic.multiprocessing import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError

    # torchrun would give every process one thread; give each its share of the cores instead (the workers inherit
    # this environment; it is restored afterwards).
    threads = os.environ.get("OMP_NUM_THREADS") or str(max(1, usable_cores() // nproc))
    # Its rendezvous banner and its own failure lines: a failed worker has printed its error, and the
    # WorkerFailedError below names it, so torchrun's log would only repeat that with pids and paths.
    elastic = logging.getLogger("torch.distributed.elastic")
    level = elastic.level
    elastic.setLevel(logging.CRITICAL)
    # torchrun's default log folder (its workers' error files) is a mkdtemp it never removes: one left per run.
    try:
        with tempfile.TemporaryDirectory(prefix="torchelastic-") as logs, environ_set(OMP_NUM_THREADS=threads):
            torchrun.run(torchrun.parse_args(["--standalone", f"--nproc-per-node={nproc}", f"--log-dir={logs}",
                                              *argv]))
    except ChildFailedError as e:
        rank, failure = e.get_first_failure()
        raise WorkerFailedError(f"training process {rank} of {nproc} failed (exit status {failure.exitcode})",
                                failure.exitcode if failure.exitcode > 0 else 1) from None
    except SignalException:
        raise KeyboardInterrupt from None
    finally:
        elastic.setLevel(level)


def relaunch(nproc: int, argv: list[str]) -> bool:
    """Data-parallel training asked for (``--nproc-per-node``) from a plain process: run this command line in
    ``nproc`` processes through torchrun, wait, and return True (the caller has nothing more to do). False in a
    process torchrun started, or when one process is asked for.

    Raises:
        UsageError: torchrun started a different number of processes on this machine than ``nproc``.
    """
    if nproc > 1 and not launched():
        launch(nproc, argv)
        return True
    local = env_context().local_world_size
    if launched() and nproc > 1 and nproc != local:
        raise UsageError(f"--nproc-per-node {nproc}, but torchrun started {local} processes on this machine")
    return False
