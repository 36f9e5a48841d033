"""Keras-exactness tests for trainer.callbacks, driven by scripted metric sequences."""

from __future__ import annotations

import json
import logging
import warnings

import pytest
import torch
from torch import nn

from trainer.callbacks import Callback, EarlyStopping, MonitorCallback, ReduceLROnPlateau


class StubTrainer:
    """Just what the callbacks touch: a tiny model, SGD with two param groups, stop_training."""

    def __init__(self, lrs: tuple[float, float] = (0.1, 0.04)) -> None:
        torch.manual_seed(0)
        self.model = nn.Linear(2, 1)
        self.optimizer = torch.optim.SGD(
            [{"params": [self.model.weight], "lr": lrs[0]}, {"params": [self.model.bias], "lr": lrs[1]}]
        )
        self.stop_training = False

    def lrs(self) -> list[float]:
        return [group["lr"] for group in self.optimizer.param_groups]

    def mark_weights(self, value: float) -> None:
        with torch.no_grad():
            self.model.weight.fill_(value)
            self.model.bias.fill_(value)


def attach(cb: Callback, trainer: StubTrainer | None = None) -> StubTrainer:
    trainer = trainer or StubTrainer()
    cb.set_trainer(trainer)
    return trainer


def drive(cb: Callback, trainer: StubTrainer, values: list[float], key: str = "val_loss",
          first_epoch: int = 0, begin: bool = True, end: bool = True) -> list[int]:
    """Runs epochs like Keras's fit loop (break after on_epoch_end sets stop_training); returns epochs run."""
    if begin:
        trainer.stop_training = False
        cb.on_train_begin()
    ran = []
    for epoch, value in enumerate(values, start=first_epoch):
        cb.on_epoch_begin(epoch)
        trainer.mark_weights(float(epoch))  # weights identify the epoch that produced them
        cb.on_epoch_end(epoch, {"loss": 9.0, key: value})
        ran.append(epoch)
        if trainer.stop_training:
            break
    if end:
        cb.on_train_end()
    return ran


# ---------------------------------------------------------------- EarlyStopping


def test_defaults_match_keras() -> None:
    es = EarlyStopping()
    assert (es.monitor, es.min_delta, es.patience, es.verbose, es.mode) == ("val_loss", 0, 0, 0, "auto")
    assert (es.baseline, es.restore_best_weights, es.start_from_epoch) == (None, False, 0)
    rl = ReduceLROnPlateau()
    assert (rl.monitor, rl.factor, rl.patience, rl.verbose, rl.mode) == ("val_loss", 0.1, 10, 0, "auto")
    assert (rl.min_delta, rl.cooldown, rl.min_lr) == (1e-4, 0, 0.0)
    assert isinstance(es, MonitorCallback) and isinstance(rl, MonitorCallback)


@pytest.mark.parametrize("patience, stopped", [(0, 3), (1, 3), (2, 4), (3, 5)])
def test_patience_stops_where_keras_does(patience: int, stopped: int) -> None:
    # Keras's early_stopping_test: stopped_epoch == max(patience, 1) + 2 for this sequence.
    es = EarlyStopping(monitor="loss", patience=patience)
    trainer = attach(es)
    ran = drive(es, trainer, [10.0, 9.0, 8.0, 9.0, 8.9, 8.8, 8.7, 8.6, 8.5], key="loss")
    assert es.stopped_epoch == stopped
    assert ran[-1] == stopped and trainer.stop_training


def test_equal_values_are_not_improvements_and_wait_counts() -> None:
    es = EarlyStopping(patience=2)
    trainer = attach(es)
    es.on_train_begin()
    waits = []
    for epoch in range(3):
        es.on_epoch_end(epoch, {"val_loss": 1.0})
        waits.append(es.wait)
    assert waits == [0, 1, 2]
    assert es.stopped_epoch == 2 and trainer.stop_training and es.best == 1.0 and es.best_epoch == 0


def test_never_stopping_leaves_stopped_epoch_zero() -> None:
    es = EarlyStopping(patience=1)
    trainer = attach(es)
    assert drive(es, trainer, [5.0, 4.0, 3.0, 2.0]) == [0, 1, 2, 3]
    assert es.stopped_epoch == 0 and not trainer.stop_training and es.best_epoch == 3


def test_epoch_zero_never_stops() -> None:
    # Only reachable with a carried-over best (resume): Keras also requires `epoch > 0`.
    es = EarlyStopping(patience=0)
    trainer = attach(es)
    es.on_train_begin()
    es.load_state_dict({"wait": 0, "best": 1.0, "best_epoch": 0, "stopped_epoch": 0})
    es.on_epoch_end(0, {"val_loss": 2.0})
    assert es.wait == 1 and not trainer.stop_training
    es.on_epoch_end(1, {"val_loss": 2.0})
    assert trainer.stop_training and es.stopped_epoch == 1


def test_min_delta_is_absolute_in_min_mode() -> None:
    # A relative threshold of 0.5 (torch's default style) would need < 5.0; Keras needs < 10 - 0.5.
    es = EarlyStopping(min_delta=0.5, patience=10)
    attach(es)
    es.on_train_begin()
    waits, bests = [], []
    for epoch, value in enumerate([10.0, 9.75, 9.5, 9.25]):
        es.on_epoch_end(epoch, {"val_loss": value})
        waits.append(es.wait)
        bests.append(es.best)
    # 9.75: smaller change than min_delta; 9.5: change equal to min_delta; 9.25: improvement.
    assert waits == [0, 1, 2, 0]
    assert bests == [10.0, 10.0, 10.0, 9.25]


def test_min_delta_is_absolute_in_max_mode_and_sign_is_ignored() -> None:
    es = EarlyStopping(monitor="val_accuracy", min_delta=-0.25, patience=10)
    attach(es)
    es.on_train_begin()
    waits = []
    for epoch, value in enumerate([0.5, 0.625, 0.75, 0.875]):
        es.on_epoch_end(epoch, {"val_accuracy": value})
        waits.append(es.wait)
    assert waits == [0, 1, 2, 0]
    assert es.best == 0.875 and es.best_epoch == 3


def test_comparison_is_float32_like_keras_backends() -> None:
    # 0.5 - 1e-10 rounds to 0.5 in float32 (Keras's floatx), so it is not an improvement.
    es = EarlyStopping(patience=5)
    attach(es)
    es.on_train_begin()
    es.on_epoch_end(0, {"val_loss": 0.5})
    es.on_epoch_end(1, {"val_loss": 0.5 - 1e-10})
    assert es.wait == 1 and es.best == 0.5


@pytest.mark.parametrize(
    "monitor, values, stops_at",
    [
        ("val_accuracy", [0.5, 0.6, 0.7], None),  # max: rising is improving
        ("acc", [0.5, 0.6, 0.7], None),
        ("val_loss", [0.5, 0.6, 0.7], 1),  # min: rising is not improving
        ("val_accuracy", [0.7, 0.6, 0.5], 1),
    ],
)
def test_auto_mode_direction(monitor: str, values: list[float], stops_at: int | None) -> None:
    es = EarlyStopping(monitor=monitor, patience=0)
    trainer = attach(es)
    ran = drive(es, trainer, values, key=monitor)
    assert (es.stopped_epoch if trainer.stop_training else None) == stops_at
    assert len(ran) == (len(values) if stops_at is None else stops_at + 1)


def test_explicit_mode_overrides_name() -> None:
    es = EarlyStopping(monitor="val_accuracy", mode="min", patience=0)
    trainer = attach(es)
    drive(es, trainer, [0.5, 0.6], key="val_accuracy")
    assert trainer.stop_training and es.stopped_epoch == 1


def test_unknown_mode_warns_and_falls_back_to_auto() -> None:
    with pytest.warns(UserWarning, match="mode 'sideways' is unknown, fallback to auto mode"):
        es = EarlyStopping(monitor="val_accuracy", mode="sideways", patience=0)
    assert es.mode == "auto"
    trainer = attach(es)
    drive(es, trainer, [0.5, 0.6], key="val_accuracy")
    assert not trainer.stop_training


def test_auto_mode_unknown_metric_raises_like_keras() -> None:
    es = EarlyStopping(monitor="lr")  # Keras raises lazily, at the first on_epoch_end
    attach(es)
    es.on_train_begin()
    with pytest.raises(ValueError, match="monitor=lr.*maximized or minimized"):
        es.on_epoch_end(0, {"lr": 0.1})
    with pytest.raises(ValueError, match="maximized or minimized"):
        ReduceLROnPlateau(monitor="lr").check_monitor(["lr"])


def test_baseline_never_beaten_stops_after_patience_and_restores_best() -> None:
    # Keras's own test: no epoch beats baseline 0.5, so 5 epochs run and epoch 2 is restored.
    es = EarlyStopping(patience=5, baseline=0.5, restore_best_weights=True)
    trainer = attach(es)
    ran = drive(es, trainer, [0.9, 0.8, 0.7, 0.71, 0.72, 0.73])
    assert ran == [0, 1, 2, 3, 4] and es.stopped_epoch == 4
    assert es.best_epoch == 2
    assert torch.all(trainer.model.weight == 2.0)


def test_baseline_wait_keeps_counting_through_improvements() -> None:
    es = EarlyStopping(patience=2, baseline=0.5)
    trainer = attach(es)
    es.on_train_begin()
    waits = []
    for epoch, value in enumerate([0.9, 0.8, 0.7, 0.6]):
        es.on_epoch_end(epoch, {"val_loss": value})
        waits.append(es.wait)
    # Each epoch improves on best, so Keras returns before the stop test although wait > patience.
    assert waits == [1, 2, 3, 4] and not trainer.stop_training
    es.on_epoch_end(4, {"val_loss": 0.65})
    assert trainer.stop_training and es.stopped_epoch == 4


def test_beating_baseline_resets_wait() -> None:
    es = EarlyStopping(patience=3, baseline=0.5)
    attach(es)
    es.on_train_begin()
    es.on_epoch_end(0, {"val_loss": 0.9})
    es.on_epoch_end(1, {"val_loss": 0.8})
    assert es.wait == 2
    es.on_epoch_end(2, {"val_loss": 0.4})
    assert es.wait == 0 and es.best == 0.4


def test_start_from_epoch_ignores_earlier_epochs() -> None:
    es = EarlyStopping(patience=0, start_from_epoch=2)
    trainer = attach(es)
    es.on_train_begin()
    es.on_epoch_end(0, {"val_loss": 1.0})
    es.on_epoch_end(1, {"val_loss": 2.0})
    assert es.best is None and es.wait == 0 and not trainer.stop_training
    es.on_epoch_end(2, {"val_loss": 3.0})  # first monitored value becomes best
    assert es.best == 3.0 and es.best_epoch == 2 and not trainer.stop_training
    es.on_epoch_end(3, {"val_loss": 4.0})
    assert trainer.stop_training and es.stopped_epoch == 3


def test_restore_best_weights_after_early_stop() -> None:
    es = EarlyStopping(patience=2, restore_best_weights=True)
    trainer = attach(es)
    ran = drive(es, trainer, [0.2, 0.15, 0.1, 0.11, 0.12])
    assert ran == [0, 1, 2, 3, 4] and es.stopped_epoch == 4
    assert es.best_epoch == 2
    assert torch.all(trainer.model.weight == 2.0) and torch.all(trainer.model.bias == 2.0)


def test_restore_best_weights_without_early_stop() -> None:
    es = EarlyStopping(patience=10, restore_best_weights=True)
    trainer = attach(es)
    drive(es, trainer, [0.3, 0.1, 0.2])
    assert es.stopped_epoch == 0 and es.best_epoch == 1
    assert torch.all(trainer.model.weight == 1.0)


def test_best_weights_are_detached_cpu_copies() -> None:
    es = EarlyStopping(patience=10, restore_best_weights=True)
    trainer = attach(es)
    drive(es, trainer, [0.3], end=False)
    trainer.mark_weights(7.0)
    assert set(es.best_weights) == {"weight", "bias"}
    for tensor in es.best_weights.values():
        assert tensor.device.type == "cpu" and not tensor.requires_grad
        assert torch.all(tensor == 0.0)


def test_no_restore_keeps_last_weights() -> None:
    es = EarlyStopping(patience=2)
    trainer = attach(es)
    drive(es, trainer, [0.2, 0.15, 0.1, 0.11, 0.12])
    assert es.best_weights is None and torch.all(trainer.model.weight == 4.0)


def test_verbose_logs_and_never_prints(caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture) -> None:
    es = EarlyStopping(patience=1, verbose=1, restore_best_weights=True)
    trainer = attach(es)
    with caplog.at_level(logging.INFO, logger="trainer.callbacks"):
        drive(es, trainer, [0.2, 0.3])
    assert "Epoch 2: early stopping" in caplog.text
    assert "Restoring model weights from the end of the best epoch: 1." in caplog.text
    assert capsys.readouterr().out == ""


def test_reuse_resets_state() -> None:
    es = EarlyStopping(patience=0, restore_best_weights=True)
    trainer = attach(es)
    drive(es, trainer, [0.1, 0.2])
    assert es.stopped_epoch == 1
    es.on_train_begin()
    assert (es.wait, es.best, es.stopped_epoch, es.best_weights, es.best_epoch) == (0, None, 0, None, 0)
    # A stale best of 0.1 would stop this run at epoch 1.
    assert drive(es, trainer, [5.0, 4.0, 3.0]) == [0, 1, 2] and es.stopped_epoch == 0


def test_missing_monitor_warns_and_skips() -> None:
    es = EarlyStopping(patience=0)
    trainer = attach(es)
    es.on_train_begin()
    message = (r"^Early stopping conditioned on metric `val_loss` which is not available\. "
               r"Available metrics are: loss,accuracy$")
    with pytest.warns(UserWarning, match=message):
        es.on_epoch_end(0, {"loss": 1.0, "accuracy": 0.5})
    assert (es.wait, es.best) == (0, None) and not trainer.stop_training


def test_check_monitor_lists_available_metrics() -> None:
    es = EarlyStopping(monitor="val_acc")
    with pytest.raises(ValueError, match=r"'val_acc'.*loss, accuracy, val_loss, val_accuracy"):
        es.check_monitor(["loss", "accuracy", "val_loss", "val_accuracy"])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        EarlyStopping(monitor="val_accuracy").check_monitor(["loss", "val_accuracy"])


def test_early_stopping_resume_matches_uninterrupted_run() -> None:
    values = [1.0, 0.8, 0.9, 0.85, 0.7, 0.75, 0.76, 0.77, 0.78]
    full = EarlyStopping(patience=3, min_delta=0.01)
    full_trainer = attach(full)
    full_ran = drive(full, full_trainer, values)
    assert full_ran[-1] == 7 and full.stopped_epoch == 7 and full.best == 0.7 and full.best_epoch == 4

    first = EarlyStopping(patience=3, min_delta=0.01)
    drive(first, attach(first), values[:3], end=False)
    state = json.loads(json.dumps(first.state_dict()))
    assert state == {"wait": 1, "best": 0.8, "best_epoch": 1, "stopped_epoch": 0}

    resumed = EarlyStopping(patience=3, min_delta=0.01)
    trainer = attach(resumed)
    resumed.on_train_begin()
    resumed.load_state_dict(state)
    ran = drive(resumed, trainer, values[3:], first_epoch=3, begin=False)
    assert ran == full_ran[3:]
    assert resumed.state_dict() == full.state_dict()


def test_restore_best_weights_survives_resume_via_trainer() -> None:
    first = EarlyStopping(patience=5, restore_best_weights=True)
    drive(first, attach(first), [0.5, 0.2, 0.4], end=False)
    saved_state, saved_weights = first.state_dict(), first.best_weights
    assert "best_weights" not in saved_state

    resumed = EarlyStopping(patience=5, restore_best_weights=True)
    trainer = attach(resumed)
    resumed.on_train_begin()
    resumed.load_state_dict(saved_state)
    resumed.best_weights = saved_weights  # the trainer saves/restores these itself
    drive(resumed, trainer, [0.3, 0.45], first_epoch=3, begin=False)
    assert resumed.best_epoch == 1 and torch.all(trainer.model.weight == 1.0)


def test_load_state_dict_rejects_incomplete_state() -> None:
    with pytest.raises(ValueError, match="stopped_epoch"):
        EarlyStopping().load_state_dict({"wait": 0, "best": None, "best_epoch": 0})


# ---------------------------------------------------------------- ReduceLROnPlateau


def run_plateau(cb: ReduceLROnPlateau, trainer: StubTrainer, values: list[float], first_epoch: int = 0):
    """Returns per-epoch (logged lr, group lrs after, wait, cooldown_counter)."""
    rows = []
    for epoch, value in enumerate(values, start=first_epoch):
        logs = {"loss": 9.0, "val_loss": value}
        cb.on_epoch_end(epoch, logs)
        rows.append((logs["lr"], trainer.lrs(), cb.wait, cb.cooldown_counter))
    return rows


def test_plateau_lr_sequence_with_patience_cooldown_and_min_lr() -> None:
    cb = ReduceLROnPlateau(factor=0.5, patience=2, cooldown=1, min_lr=0.02, min_delta=0)
    trainer = attach(cb)
    cb.on_train_begin()
    rows = run_plateau(cb, trainer, [1.0] * 10)
    # Traced by hand from Keras's on_epoch_end; group 1 starts at 0.04 and hits min_lr first.
    # Once no group can go lower, Keras leaves wait counting up and sets no cooldown.
    expected = [
        (0.1, [0.1, 0.04], 0, 0),
        (0.1, [0.1, 0.04], 1, 0),
        (0.1, [0.05, 0.02], 0, 1),
        (0.05, [0.05, 0.02], 1, 0),
        (0.05, [0.025, 0.02], 0, 1),
        (0.025, [0.025, 0.02], 1, 0),
        (0.025, [0.02, 0.02], 0, 1),
        (0.02, [0.02, 0.02], 1, 0),
        (0.02, [0.02, 0.02], 2, 0),
        (0.02, [0.02, 0.02], 3, 0),
    ]
    assert [(pytest.approx(lr), pytest.approx(g), w, c) for lr, g, w, c in expected] == rows


def test_plateau_cooldown_suspends_counting() -> None:
    # Keras's test_cooldown: patience=1, cooldown=2, min_delta=100 -> two reductions in 4 epochs.
    cb = ReduceLROnPlateau(patience=1, factor=0.1, min_delta=100, cooldown=2)
    trainer = attach(cb, StubTrainer(lrs=(0.1, 0.1)))
    cb.on_train_begin()
    rows = run_plateau(cb, trainer, [1.0, 1.0, 1.0, 1.0])
    assert [r[1][0] for r in rows] == pytest.approx([0.1, 0.01, 0.01, 0.001])
    assert [r[1][1] for r in rows] == pytest.approx([0.1, 0.01, 0.01, 0.001])
    assert [(r[2], r[3]) for r in rows] == [(0, 0), (0, 2), (0, 1), (0, 2)]


def test_plateau_improvement_resets_wait() -> None:
    cb = ReduceLROnPlateau(patience=2, min_delta=0)
    trainer = attach(cb)
    cb.on_train_begin()
    rows = run_plateau(cb, trainer, [1.0, 1.0, 0.5, 0.5, 0.5])
    assert [r[2] for r in rows] == [0, 1, 0, 1, 0]
    assert trainer.lrs() == pytest.approx([0.01, 0.004])


def test_plateau_min_delta_is_absolute() -> None:
    # Relative 1e-4 would need < 999.9; Keras's absolute 1e-4 makes 999.95 an improvement.
    cb = ReduceLROnPlateau(patience=1)
    trainer = attach(cb)
    cb.on_train_begin()
    run_plateau(cb, trainer, [1000.0, 999.95])
    assert cb.best == 999.95 and trainer.lrs() == [0.1, 0.04]
    # A change smaller than min_delta is not an improvement.
    run_plateau(cb, trainer, [999.94995], first_epoch=2)
    assert cb.best == 999.95 and trainer.lrs() == pytest.approx([0.01, 0.004])


def test_plateau_max_mode_for_accuracy() -> None:
    cb = ReduceLROnPlateau(monitor="val_accuracy", patience=1, min_delta=0)
    trainer = attach(cb)
    cb.on_train_begin()
    for epoch, acc in enumerate([0.5, 0.6, 0.7]):
        cb.on_epoch_end(epoch, {"val_accuracy": acc})
    assert trainer.lrs() == [0.1, 0.04]
    cb.on_epoch_end(3, {"val_accuracy": 0.7})
    assert trainer.lrs() == pytest.approx([0.01, 0.004])


def test_plateau_min_lr_compared_in_float32() -> None:
    # 0.1 * 0.1 * 0.1 == 0.0010000000000000002 > 0.001 in float64, but Keras tests
    # `old_lr > np.float32(min_lr)` on a float32 lr, so it stops reducing and wait keeps counting.
    cb = ReduceLROnPlateau(patience=1, min_lr=0.001, min_delta=0)
    trainer = attach(cb, StubTrainer(lrs=(0.1, 0.1)))
    cb.on_train_begin()
    rows = run_plateau(cb, trainer, [1.0] * 5)
    assert [r[2] for r in rows] == [0, 0, 0, 1, 2]
    assert trainer.lrs() == pytest.approx([0.001, 0.001])


def test_plateau_honors_min_lr_like_keras() -> None:
    # Keras's test_honors_min_lr: patience=1, min_delta=10, min_lr=0.005, 4 epochs -> 0.005.
    cb = ReduceLROnPlateau(patience=1, factor=0.1, min_delta=10, min_lr=0.005)
    trainer = attach(cb, StubTrainer(lrs=(0.1, 0.1)))
    cb.on_train_begin()
    rows = run_plateau(cb, trainer, [1.0, 0.5, 0.25, 0.125])
    assert [r[1][0] for r in rows] == pytest.approx([0.1, 0.01, 0.005, 0.005])


@pytest.mark.parametrize("factor", [1.0, 1.5])
def test_factor_at_least_one_rejected(factor: float) -> None:
    with pytest.raises(ValueError, match="factor >= 1.0"):
        ReduceLROnPlateau(factor=factor)


def test_plateau_verbose_logs(caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture) -> None:
    cb = ReduceLROnPlateau(patience=1, verbose=1)
    trainer = attach(cb)
    cb.on_train_begin()
    with caplog.at_level(logging.INFO, logger="trainer.callbacks"):
        run_plateau(cb, trainer, [1.0, 1.0])
    assert "Epoch 2: ReduceLROnPlateau reducing learning rate to" in caplog.text
    assert capsys.readouterr().out == ""


def test_plateau_resume_matches_uninterrupted_run() -> None:
    values = [1.0, 1.0, 1.0, 1.0, 0.5, 0.6, 0.6, 0.6, 0.6]
    kwargs = dict(factor=0.5, patience=2, cooldown=1, min_delta=0)
    full = ReduceLROnPlateau(**kwargs)
    full_trainer = attach(full)
    full.on_train_begin()
    full_rows = run_plateau(full, full_trainer, values)
    assert [r[0] for r in full_rows] == pytest.approx([0.1, 0.1, 0.1, 0.05, 0.05, 0.05, 0.05, 0.025, 0.025])
    assert [r[2] for r in full_rows] == [0, 1, 0, 1, 0, 1, 0, 1, 0]
    assert full_trainer.lrs() == pytest.approx([0.0125, 0.005])

    first = ReduceLROnPlateau(**kwargs)
    first_trainer = attach(first)
    first.on_train_begin()
    run_plateau(first, first_trainer, values[:3])  # stops right after a reduction, in cooldown
    state = json.loads(json.dumps(first.state_dict()))
    assert state == {"wait": 0, "best": 1.0, "cooldown_counter": 1}
    optimizer_state = first_trainer.optimizer.state_dict()

    resumed = ReduceLROnPlateau(**kwargs)
    trainer = attach(resumed)
    trainer.optimizer.load_state_dict(optimizer_state)  # the trainer restores the lrs itself
    resumed.on_train_begin()
    resumed.load_state_dict(state)
    assert run_plateau(resumed, trainer, values[3:], first_epoch=3) == full_rows[3:]
    assert resumed.state_dict() == full.state_dict()


def test_plateau_reuse_resets_state() -> None:
    cb = ReduceLROnPlateau(patience=1, cooldown=3, min_delta=0)
    trainer = attach(cb)
    cb.on_train_begin()
    run_plateau(cb, trainer, [0.1, 0.2, 0.3])
    assert (cb.best, cb.cooldown_counter) == (0.1, 2)
    cb.on_train_begin()
    assert (cb.wait, cb.best, cb.cooldown_counter) == (0, None, 0)
    fresh = StubTrainer()
    cb.set_trainer(fresh)
    run_plateau(cb, fresh, [5.0, 4.0])  # a stale best of 0.1 would reduce at once
    assert fresh.lrs() == [0.1, 0.04] and cb.best == 4.0


def test_plateau_missing_monitor_warns_and_skips() -> None:
    cb = ReduceLROnPlateau(patience=0, cooldown=2)
    trainer = attach(cb)
    cb.on_train_begin()
    cb.cooldown_counter = 2
    logs = {"loss": 1.0}
    message = (r"^Learning rate reduction is conditioned on metric `val_loss` which is not available\. "
               r"Available metrics are: loss,lr\.$")
    with pytest.warns(UserWarning, match=message):
        cb.on_epoch_end(0, logs)
    assert logs["lr"] == 0.1  # still recorded, like Keras's logs["learning_rate"]
    assert (cb.wait, cb.best, cb.cooldown_counter) == (0, None, 2) and trainer.lrs() == [0.1, 0.04]


def test_plateau_check_monitor() -> None:
    cb = ReduceLROnPlateau(monitor="val_loss")
    with pytest.raises(ValueError, match=r"'val_loss'.*loss, accuracy"):
        cb.check_monitor(["loss", "accuracy"])
    cb.check_monitor(["loss", "val_loss"])
