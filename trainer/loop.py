"""Trainer: fit, train_one_epoch, evaluate — the Keras-style epoch loop with callbacks."""
from __future__ import annotations

import contextlib
import logging
import multiprocessing
import multiprocessing.context
import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from trainer import distributed
from trainer.data import IMAGENET_MEAN, IMAGENET_STD, EpochSampler, epoch_seed, normalize_batch
from core.host import die_with_parent
from trainer.distributed import DistContext
from trainer.errors import TrainingDivergedError

log = logging.getLogger(__name__)

METRICS = ("loss", "accuracy", "val_loss", "val_accuracy", "lr")


@dataclass
class History:
    """Per-epoch ``logs`` rows (Keras's History), plus where training stopped and why."""
    rows: list[dict[str, float]] = field(default_factory=list)
    stop_reason: str = "max_epochs"

    @property
    def epochs_run(self) -> int:
        return len(self.rows)


def worker_context() -> multiprocessing.context.BaseContext:
    """A forkserver (spawn where there is none) with torch and torchvision preloaded, so workers start fast."""
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["trainer.forkserver_guard", "torch", "torchvision", "PIL.Image", "trainer.data"])
    return ctx


def to_training_layout(model: nn.Module, device: torch.device) -> nn.Module:
    """Move ``model`` to ``device`` in channels_last, the layout the trainer feeds it.

    channels_last is oneDNN's native convolution layout and lets max-pool vectorise over channels: +23 % img/s with
    bf16 autocast and +9 % in fp32 on the 2-core reference CPU (benchmarks/train_throughput.py).
    """
    return model.to(device, memory_format=torch.channels_last)


def _worker_init(worker_id: int) -> None:
    """A data worker ignores Ctrl-C (the training process stops it, without a KeyboardInterrupt traceback per worker)
    and dies with its parent, even on kill -9 (Linux: PR_SET_PDEATHSIG)."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    die_with_parent()


class Trainer:
    """Runs epochs over a model, an optimizer and Keras-style callbacks.

    Callbacks see ``self.model``, ``self.optimizer`` and may set ``self.stop_training``. ``on_epoch_saved`` (if given)
    is called after each finished epoch, after the callbacks, with ``(epoch, logs)``; the run orchestrator uses it
    to write checkpoints.

    With an active ``dist`` context each process trains on its share of every epoch (see EpochSampler) through
    DistributedDataParallel, and the logs are summed over the ranks first: every rank sees the same numbers, so the
    callbacks take the same decisions everywhere. ``self.model`` stays the bare module.
    """

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer, train_set: Dataset, val_set: Dataset, *,
                 batch_size: int, device: torch.device, mean: Sequence[float] = IMAGENET_MEAN,
                 std: Sequence[float] = IMAGENET_STD, amp_dtype: torch.dtype | None = None, seed: int = 0,
                 workers: int = 1, callbacks: Sequence[Any] = (), warmup_steps: int = 0,
                 show_progress: bool = True, on_epoch_saved: Callable[[int, dict], None] | None = None,
                 dist: DistContext = DistContext()) -> None:
        self.model = model
        self.dist = dist
        self.train_model = distributed.wrap(model, dist)  # the forward that syncs gradients; evaluation needs none
        self.optimizer = optimizer
        self.train_set, self.val_set = train_set, val_set
        self.batch_size, self.device, self.amp_dtype = batch_size, device, amp_dtype
        self.mean, self.std = tuple(mean), tuple(std)
        self.seed, self.workers, self.warmup_steps = seed, workers, warmup_steps
        self.callbacks = list(callbacks)
        self.show_progress = show_progress
        self.on_epoch_saved = on_epoch_saved
        self.stop_training = False
        self.global_step = 0
        self.num_replicas, self.rank = dist.world_size, dist.rank
        self._loaders: dict[int, DataLoader] = {}
        # fp16 needs loss scaling; bf16 has fp32's exponent range and does not.
        self.scaler = torch.amp.GradScaler("cuda") if amp_dtype == torch.float16 else None
        self.base_lrs = [g["lr"] for g in optimizer.param_groups]
        for cb in self.callbacks:
            cb.set_trainer(self)

    def fit(self, epochs: int, start_epoch: int = 0, history: History | None = None) -> History:
        """Train epochs ``start_epoch .. epochs-1``; callbacks must already hold their state when resuming."""
        history = history or History()
        if start_epoch >= epochs:
            history.stop_reason = "max_epochs"
            return history
        for epoch in range(start_epoch, epochs):
            for cb in self.callbacks:
                cb.on_epoch_begin(epoch)
            logs = {**self.train_one_epoch(epoch, epochs), **self.evaluate()}
            logs["lr"] = float(self.optimizer.param_groups[0]["lr"])  # the lr this epoch trained with
            for cb in self.callbacks:
                cb.on_epoch_end(epoch, logs)
            history.rows.append({k: float(logs[k]) for k in METRICS})
            log.info("epoch %d/%d - %s", epoch + 1, epochs, " - ".join(f"{k} {logs[k]:.4g}" for k in METRICS))
            if self.on_epoch_saved is not None:
                self.on_epoch_saved(epoch, logs)
            if self.stop_training:
                history.stop_reason = "early_stopping"
                break
        return history

    def _loader(self, dataset: Dataset, shuffle: bool, epoch: int) -> DataLoader:
        """One persistent loader per dataset; the sampler carries the epoch (see EpochSampler)."""
        key = id(dataset)
        if key not in self._loaders:
            workers = self.workers if len(dataset) > self.batch_size else 0  # a tiny set is not worth a process
            sampler = EpochSampler(len(dataset), shuffle, self.seed, self.num_replicas, self.rank, pad=shuffle)
            self._loaders[key] = DataLoader(
                dataset, batch_size=self.batch_size, sampler=sampler, num_workers=workers,
                pin_memory=self.device.type == "cuda", persistent_workers=workers > 0,
                prefetch_factor=4 if workers else None,
                # Its own generator: a loader draws its workers' base seed when its iterator starts (the first epoch
                # of a process), and from the global RNG that would shift every dropout mask of the epoch in which a
                # resumed run starts. The per-sample transforms seed themselves (ImageListDataset), so the workers'
                # seeds change nothing else.
                generator=torch.Generator().manual_seed(self.seed), worker_init_fn=_worker_init,
                # Workers forked from the trainer share its pages: every page the trainer then writes is copied
                # (575k page faults and -20 % img/s per epoch measured). A forkserver's workers share nothing.
                multiprocessing_context=worker_context() if workers else None)
        loader = self._loaders[key]
        loader.sampler.set_epoch(epoch)
        return loader

    def close(self) -> None:
        """Stop the loaders' worker processes."""
        for loader in self._loaders.values():
            iterator = getattr(loader, "_iterator", None)
            if iterator is not None:
                iterator._shutdown_workers()
        self._loaders.clear()

    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def train_one_epoch(self, epoch: int, epochs: int) -> dict[str, float]:
        self.train_model.train()
        # Dropout masks, reproducible per epoch; each rank draws its own, and rank 0 those of a lone process.
        torch.manual_seed(epoch_seed(self.seed, epoch) + self.rank * 1_000_000_007)
        loader = self._loader(self.train_set, shuffle=True, epoch=epoch)
        loss_sum = torch.zeros((), dtype=torch.float64, device=self.device)
        correct = torch.zeros((), dtype=torch.int64, device=self.device)
        seen, wait_s, start = 0, 0.0, time.perf_counter()
        bar = tqdm(total=len(loader), desc=f"Epoch {epoch + 1}/{epochs}", unit="batch", leave=False,
                   disable=not self.show_progress, dynamic_ncols=True)
        batches = iter(loader)
        with bar:
            for step in range(len(loader)):
                t0 = time.perf_counter()
                images, labels = next(batches)
                wait_s += time.perf_counter() - t0
                images = self._to_device(images)
                labels = labels.to(self.device, non_blocking=True)
                self._warmup_lr()
                loss, logits = self._step(images, labels)
                # Checked on the sum over the ranks, so that all of them stop at the same step, none left waiting.
                loss_all = distributed.all_reduce_sum(loss.detach().clone(), self.dist).item()
                if not math.isfinite(loss_all):
                    raise TrainingDivergedError(
                        f"the loss became {loss_all} at epoch {epoch + 1}, step {step + 1}: training stopped. "
                        "The last finished epoch's checkpoint is kept; try a lower --lr.")
                loss_sum += loss.detach().double() * labels.numel()
                correct += (logits.argmax(1) == labels).sum()
                seen += labels.numel()
                self.global_step += 1
                bar.update()
                bar.set_postfix(loss=f"{loss_sum.item() / seen:.4f}", acc=f"{correct.item() / seen:.3f}")
        loss_total, correct_total, seen = self._sum_over_ranks(loss_sum, correct, seen)
        elapsed = time.perf_counter() - start
        self.last_epoch_timing = {"seconds": elapsed, "images": seen, "data_wait_s": wait_s}
        log.debug("epoch %d: %.1f img/s, data wait %.1f%%", epoch + 1, seen / elapsed, 100 * wait_s / elapsed)
        return {"loss": loss_total / seen, "accuracy": correct_total / seen}

    def _sum_over_ranks(self, loss_sum: torch.Tensor, correct: torch.Tensor, seen: int) -> tuple[float, int, int]:
        """(loss sum, correct, images) over all ranks, in one reduction; this rank's own when training alone."""
        totals = torch.stack([loss_sum.double(), correct.double(),
                              torch.tensor(float(seen), dtype=torch.float64, device=self.device)])
        loss_total, correct_total, seen_total = distributed.all_reduce_sum(totals, self.dist).tolist()
        return loss_total, int(correct_total), int(seen_total)

    def _to_device(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 batch from the loader → normalised float32 on the device, channels_last (see to_training_layout)."""
        images = images.to(self.device, non_blocking=True, memory_format=torch.channels_last)
        return normalize_batch(images, self.mean, self.std) if images.dtype == torch.uint8 else images

    def _step(self, images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self.optimizer.zero_grad(set_to_none=True)
        with self._autocast():
            logits = self.train_model(images)
        loss = F.cross_entropy(logits.float(), labels)
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            loss.backward()
            self.optimizer.step()
        return loss, logits

    def _warmup_lr(self) -> None:
        if self.global_step >= self.warmup_steps:
            return
        scale = (self.global_step + 1) / self.warmup_steps
        for group, base in zip(self.optimizer.param_groups, self.base_lrs):
            group["lr"] = base * scale

    @torch.inference_mode()
    def evaluate(self, dataset: Dataset | None = None) -> dict[str, float]:
        """Loss and top-1 accuracy on ``dataset`` (default: the validation set), deterministic.

        With several ranks each evaluates its share (every image once) and the sums are combined.
        """
        self.model.eval()
        loss_sum = torch.zeros((), dtype=torch.float64, device=self.device)
        correct = torch.zeros((), dtype=torch.int64, device=self.device)
        seen = 0
        for images, labels in self._loader(dataset or self.val_set, shuffle=False, epoch=0):
            images, labels = self._to_device(images), labels.to(self.device)
            with self._autocast():
                logits = self.model(images)
            loss_sum += F.cross_entropy(logits.float(), labels, reduction="sum").double()
            correct += (logits.argmax(1) == labels).sum()
            seen += labels.numel()
        loss_total, correct_total, seen = self._sum_over_ranks(loss_sum, correct, seen)
        return {"val_loss": loss_total / seen, "val_accuracy": correct_total / seen}
