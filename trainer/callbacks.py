"""Keras 3's EarlyStopping and ReduceLROnPlateau callbacks, ported to PyTorch with Keras-exact semantics."""

from __future__ import annotations

import logging
import operator
import warnings
from typing import Any, Callable, Iterable

import numpy as np
import torch

logger = logging.getLogger(__name__)

# Keras 3 resolves mode="auto" from the compiled metric objects' `_direction`; we only have names,
# so these are the default names of the Keras metrics whose `_direction` is "up" (plus the "acc"
# alias compile() accepts) and of common lower-is-better metrics.
_UP_METRICS = frozenset(
    "acc accuracy binary_accuracy categorical_accuracy sparse_categorical_accuracy top_k_categorical_accuracy"
    " sparse_top_k_categorical_accuracy auc precision recall true_positives true_negatives f1_score fbeta_score"
    " r2_score iou binary_iou mean_iou one_hot_iou one_hot_mean_iou cosine_similarity pearson_correlation"
    " concordance_correlation".split())
_DOWN_METRICS = frozenset(
    "mse mae mape msle mean_squared_error mean_absolute_error mean_absolute_percentage_error hinge squared_hinge"
    " mean_squared_logarithmic_error root_mean_squared_error log_cosh_error categorical_hinge kl_divergence poisson"
    " binary_crossentropy categorical_crossentropy sparse_categorical_crossentropy false_positives false_negatives"
    .split())


def _f32(x: float) -> np.float32:
    """Round to float32: Keras's `ops.less`/`ops.greater` turn Python floats into floatx tensors."""
    with np.errstate(over="ignore"):
        return np.float32(x)


class Callback:
    """No-op base class; `set_trainer` gives access to `.model`, `.optimizer` and `.stop_training`."""

    def __init__(self) -> None:
        self.trainer: Any = None

    def set_trainer(self, trainer: Any) -> None:
        """Stores `trainer`, which has `.model` (nn.Module), `.optimizer` and a writable `.stop_training`."""
        self.trainer = trainer

    def on_train_begin(self, logs: dict[str, float] | None = None) -> None:
        """Called once before the first epoch."""

    def on_epoch_begin(self, epoch: int, logs: dict[str, float] | None = None) -> None:
        """Called at the start of each 0-based epoch."""

    def on_epoch_end(self, epoch: int, logs: dict[str, float] | None = None) -> None:
        """Called at the end of each 0-based epoch with the epoch's flat metric dict."""

    def on_train_end(self, logs: dict[str, float] | None = None) -> None:
        """Called once after the last epoch."""


class MonitorCallback(Callback):
    """Shared monitor logic of Keras 3's `MonitorCallback`; `min_delta` is absolute as in Keras.

    Args:
        monitor: Name of the logged quantity to watch.
        mode: "min", "max" or "auto" (direction inferred from the metric name).
        min_delta: Absolute change that counts as an improvement (its sign is ignored).
    """

    _STATE_KEYS: tuple[str, ...] = ("wait", "best")

    def __init__(self, monitor: str = "val_loss", mode: str = "auto", min_delta: float = 0.0) -> None:
        super().__init__()
        if mode not in ("auto", "min", "max"):
            warnings.warn(f"{type(self).__name__} mode '{mode}' is unknown, fallback to auto mode.", stacklevel=3)
            mode = "auto"
        self.monitor, self.mode = monitor, mode
        self.min_delta = abs(min_delta)
        self.best: float | None = None
        self.wait = 0
        self.monitor_op: Callable[[Any, Any], Any] | None = None

    def _set_monitor_op(self) -> None:
        if self.mode == "min":
            self.monitor_op = operator.lt
        elif self.mode == "max":
            self.monitor_op = operator.gt
        else:
            name = self.monitor.removeprefix("val_")
            if name == "loss" or name in _DOWN_METRICS:
                self.monitor_op = operator.lt
            # "acc" substring: our stand-in for a custom accuracy metric object with _direction "up".
            elif name in _UP_METRICS or "acc" in name:
                self.monitor_op = operator.gt
            else:
                raise ValueError(
                    f"{type(self).__name__} callback received monitor={self.monitor}, but Keras isn't able to "
                    "automatically determine whether that metric should be maximized or minimized. Pass "
                    "`mode='max'` in order to monitor based on the highest metric value, or pass `mode='min'` "
                    "in order to use the lowest value.")
        # Keras: `if self.monitor_op == ops.less: self.min_delta *= -1`, then compares
        # `monitor_op(current - min_delta, reference)`, i.e. min mode needs current + |d| < ref.
        if self.monitor_op is operator.lt:
            self.min_delta *= -1

    def _is_improvement(self, current: float, reference: float | None) -> bool:
        """Whether `current` beats `reference` by more than `|min_delta|` (strictly); None is always beaten."""
        if reference is None:
            return True
        # Keras's ops.less/ops.greater compare in float32 (floatx) on the TF, JAX and torch backends.
        return bool(self.monitor_op(_f32(current - self.min_delta), _f32(reference)))

    def _monitor_value(self, logs: dict[str, float], what: str, end: str = "") -> float | None:
        value = logs.get(self.monitor)
        if value is None:
            # Keras warns and skips the epoch rather than failing; `check_monitor` is the strict path.
            warnings.warn(f"{what} conditioned on metric `{self.monitor}` which is not available. "
                          f"Available metrics are: {','.join(list(logs.keys()))}{end}", stacklevel=3)
            return None
        return float(value)

    def check_monitor(self, available: Iterable[str]) -> None:
        """Fails early if the monitored quantity will never be logged or its direction is unknown.

        Args:
            available: Names of the metrics the trainer logs each epoch.

        Raises:
            ValueError: `monitor` is not in `available`, or mode="auto" cannot infer its direction.
        """
        names = list(available)
        if self.monitor not in names:
            raise ValueError(f"{type(self).__name__} monitors '{self.monitor}', which is not logged; "
                             f"available metrics: {', '.join(names) or '(none)'}")
        if self.monitor_op is None:
            self._set_monitor_op()

    def state_dict(self) -> dict[str, Any]:
        """Returns the JSON-serializable counters needed to resume (never the weights)."""
        return {key: getattr(self, key) for key in self._STATE_KEYS}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restores counters saved by `state_dict`; call it after `on_train_begin`.

        Raises:
            ValueError: A counter is missing from `state`.
        """
        missing = [key for key in self._STATE_KEYS if key not in state]
        if missing:
            raise ValueError(f"{type(self).__name__} state is missing {', '.join(missing)}")
        for key in self._STATE_KEYS:
            setattr(self, key, state[key])


class EarlyStopping(MonitorCallback):
    """Stops training when `monitor` stops improving; `min_delta` is absolute as in Keras.

    Args:
        monitor: Quantity to watch.
        min_delta: Absolute change that counts as an improvement.
        patience: Epochs without improvement before stopping.
        verbose: 1 logs stopping and weight restoring (via `logging`).
        mode: "auto", "min" or "max".
        baseline: Value `monitor` must beat for `wait` to reset.
        restore_best_weights: Restore the best epoch's weights at train end (stopped early or not).
        start_from_epoch: Epochs (0-based) before this one are ignored entirely.
    """

    _STATE_KEYS = ("wait", "best", "best_epoch", "stopped_epoch")

    def __init__(self, monitor: str = "val_loss", min_delta: float = 0, patience: int = 0, verbose: int = 0,
                 mode: str = "auto", baseline: float | None = None, restore_best_weights: bool = False,
                 start_from_epoch: int = 0) -> None:
        super().__init__(monitor, mode, min_delta)
        self.patience, self.verbose, self.baseline = patience, verbose, baseline
        self.restore_best_weights, self.start_from_epoch = restore_best_weights, start_from_epoch
        self.stopped_epoch = 0
        self.best_epoch: int | None = None  # Keras only creates it (as 0) in on_train_begin.
        self.best_weights: dict[str, torch.Tensor] | None = None

    def on_train_begin(self, logs: dict[str, float] | None = None) -> None:
        self.wait, self.stopped_epoch, self.best, self.best_weights = 0, 0, None, None
        self.best_epoch = 0  # Keras resets it to 0, not None.

    def _snapshot(self) -> dict[str, torch.Tensor]:
        return {k: v.detach().to("cpu", copy=True) for k, v in self.trainer.model.state_dict().items()}

    def on_epoch_end(self, epoch: int, logs: dict[str, float] | None = None) -> None:
        if self.monitor_op is None:
            self._set_monitor_op()
        current = self._monitor_value(logs or {}, "Early stopping")
        if current is None or epoch < self.start_from_epoch:
            return
        if self.restore_best_weights and self.best_weights is None:
            # Keras: if best weights were never set, the current weights are the best.
            self.best_weights = self._snapshot()
            self.best_epoch = epoch
        self.wait += 1  # Counted before the test, so an improvement over best but not baseline keeps it.
        if self._is_improvement(current, self.best):
            self.best, self.best_epoch = current, epoch
            if self.restore_best_weights:
                self.best_weights = self._snapshot()
            if self.baseline is None or self._is_improvement(current, self.baseline):
                self.wait = 0
            return
        if self.wait >= self.patience and epoch > 0:
            self.stopped_epoch = epoch
            self.trainer.stop_training = True

    def on_train_end(self, logs: dict[str, float] | None = None) -> None:
        if self.stopped_epoch > 0 and self.verbose > 0:
            logger.info("Epoch %d: early stopping", self.stopped_epoch + 1)
        if self.restore_best_weights and self.best_weights is not None:
            if self.verbose > 0:
                logger.info("Restoring model weights from the end of the best epoch: %d.", self.best_epoch + 1)
            self.trainer.model.load_state_dict(self.best_weights)


class ReduceLROnPlateau(MonitorCallback):
    """Multiplies every param group's lr by `factor` when `monitor` plateaus; `min_delta` is absolute as in Keras.

    Args:
        monitor: Quantity to watch.
        factor: Multiplier for the lr, must be < 1.
        patience: Epochs without improvement before reducing.
        verbose: 1 logs each reduction (via `logging`).
        mode: "auto", "min" or "max".
        min_delta: Absolute change that counts as an improvement.
        cooldown: Epochs after a reduction during which `wait` is not counted.
        min_lr: Lower bound on the lr.

    Raises:
        ValueError: `factor >= 1.0`.
    """

    _STATE_KEYS = ("wait", "best", "cooldown_counter")

    def __init__(self, monitor: str = "val_loss", factor: float = 0.1, patience: int = 10, verbose: int = 0,
                 mode: str = "auto", min_delta: float = 1e-4, cooldown: int = 0, min_lr: float = 0.0) -> None:
        super().__init__(monitor, mode, min_delta)
        if factor >= 1.0:
            raise ValueError(f"ReduceLROnPlateau does not support a factor >= 1.0. Received factor={factor}")
        self.factor, self.patience, self.verbose = factor, patience, verbose
        self.cooldown, self.min_lr, self.cooldown_counter = cooldown, min_lr, 0

    def on_train_begin(self, logs: dict[str, float] | None = None) -> None:
        self.cooldown_counter, self.wait, self.best = 0, 0, None

    def in_cooldown(self) -> bool:
        """Whether a recent reduction still suspends patience counting."""
        return self.cooldown_counter > 0

    def on_epoch_end(self, epoch: int, logs: dict[str, float] | None = None) -> None:
        if self.monitor_op is None:
            self._set_monitor_op()
        logs = logs or {}
        groups = self.trainer.optimizer.param_groups
        # Keras 3 logs this as logs["learning_rate"]; our trainer's key is "lr". It is the lr this
        # epoch ran with (read before any reduction).
        logs["lr"] = float(groups[0]["lr"])
        current = self._monitor_value(logs, "Learning rate reduction is", end=".")  # Keras's wording
        if current is None:
            return
        if self.in_cooldown():
            self.cooldown_counter -= 1
            self.wait = 0
        if self._is_improvement(current, self.best):
            self.best, self.wait = current, 0
        elif not self.in_cooldown():
            self.wait += 1
            if self.wait >= self.patience:
                new_lrs = []
                for group in groups:
                    old_lr = float(group["lr"])
                    # Keras's lr lives in a float32 variable and is tested as `old_lr > np.float32(min_lr)`.
                    if _f32(old_lr) > _f32(self.min_lr):
                        group["lr"] = max(old_lr * self.factor, self.min_lr)
                        new_lrs.append(group["lr"])
                # Keras resets wait/cooldown only when it actually lowered the lr.
                if new_lrs:
                    if self.verbose > 0:
                        logger.info("Epoch %d: ReduceLROnPlateau reducing learning rate to %s.",
                                    epoch + 1, ", ".join(str(lr) for lr in new_lrs))
                    self.cooldown_counter = self.cooldown
                    self.wait = 0
