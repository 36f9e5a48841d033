"""trainer.callbacks against the real Keras 3 callbacks: random scenarios, identical trajectories.

Keras runs on its torch backend (no TensorFlow needed). Each scenario drives both implementations the way Keras's
fit loop does — on_train_begin, on_epoch_end per epoch with the same logs, stop when stop_training is set,
on_train_end — after marking the weights with the epoch number, and compares the epochs run, the learning rate
after every epoch, which epoch's weights the model ends with, and stopped_epoch (or that both refuse the settings).
"""
from __future__ import annotations

import atexit
import math
import os
import random
import shutil
import tempfile
import warnings

import pytest
import torch
from torch import nn

os.environ.setdefault("KERAS_BACKEND", "torch")
if "KERAS_HOME" not in os.environ:  # keras writes its config there on import: a private one, removed at exit
    os.environ["KERAS_HOME"] = tempfile.mkdtemp(prefix="keras-home-")
    atexit.register(shutil.rmtree, os.environ["KERAS_HOME"], ignore_errors=True)
keras = pytest.importorskip("keras", reason="keras is not installed (pip install -e '.[dev]' brings it)")
np = pytest.importorskip("numpy")

from trainer import callbacks as ours  # noqa: E402

MONITORS = ("val_loss", "val_accuracy", "loss", "accuracy", "val_f1")  # val_f1: no known direction in auto mode


def _scenario(rng: random.Random):
    monitor, mode = rng.choice(MONITORS), rng.choice(["auto", "auto", "min", "max"])
    levels = [round(rng.uniform(0, 1), 2) for _ in range(rng.randint(2, 6))]  # repeated values: ties and plateaus
    values = [rng.choice(levels) if rng.random() < 0.5 else round(rng.uniform(0, 1), 3)
              for _ in range(rng.randint(1, 25))]
    values = [math.nan if rng.random() < 0.03 else v for v in values]
    early = dict(monitor=monitor, mode=mode, min_delta=rng.choice([0, 0, 0.01, 0.1, -0.02]),
                 patience=rng.randint(0, 4), baseline=rng.choice([None, None, 0.3, 0.7]),
                 restore_best_weights=rng.random() < 0.6, start_from_epoch=rng.choice([0, 0, 1, 3]))
    reduce = dict(monitor=monitor, mode=mode, factor=rng.choice([0.5, 0.1, 0.3]), patience=rng.randint(0, 3),
                  min_delta=rng.choice([0, 1e-4, 0.05]), cooldown=rng.randint(0, 2),
                  min_lr=rng.choice([0, 1e-3, 0.02]))
    use = rng.choice([("early",), ("reduce",), ("early", "reduce")])  # the trainer's order: EarlyStopping first
    return monitor, values, early, reduce, use


def _drive(callbacks, set_epoch_weights, stop_requested, lr, monitor, values):
    for cb in callbacks:
        cb.on_train_begin()
    lrs = []
    for epoch, value in enumerate(values):
        set_epoch_weights(epoch)
        for cb in callbacks:
            cb.on_epoch_end(epoch, {monitor: value, "other": 1.0})
        lrs.append(lr())
        if stop_requested():
            break
    for cb in callbacks:
        cb.on_train_end()
    return lrs


def _run_keras(monitor, values, early, reduce, use):
    model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse", metrics=["accuracy"])
    model.evaluate(np.zeros((1, 1)), np.zeros((1, 1)), verbose=0)  # builds the metrics auto mode reads
    model.stop_training = False
    made = {"early": lambda: keras.callbacks.EarlyStopping(**early),
            "reduce": lambda: keras.callbacks.ReduceLROnPlateau(**reduce)}
    callbacks = [made[name]() for name in use]
    for cb in callbacks:
        cb.set_model(model)
    kernel = model.layers[0].kernel
    lrs = _drive(callbacks, lambda e: kernel.assign(np.full((1, 1), float(e), dtype="float32")),
                 lambda: model.stop_training,
                 lambda: float(keras.ops.convert_to_numpy(model.optimizer.learning_rate)), monitor, values)
    weights_epoch = float(keras.ops.convert_to_numpy(kernel)[0, 0])
    return len(lrs), lrs, weights_epoch, callbacks[0].stopped_epoch if use[0] == "early" else None


class _Trainer:
    def __init__(self) -> None:
        self.model = nn.Linear(1, 1)
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=0.1)
        self.stop_training = False


def _run_ours(monitor, values, early, reduce, use):
    trainer = _Trainer()
    made = {"early": lambda: ours.EarlyStopping(**early), "reduce": lambda: ours.ReduceLROnPlateau(**reduce)}
    callbacks = [made[name]() for name in use]
    for cb in callbacks:
        cb.set_trainer(trainer)

    def mark(epoch: int) -> None:
        with torch.no_grad():
            trainer.model.weight.fill_(float(epoch))

    lrs = _drive(callbacks, mark, lambda: trainer.stop_training, lambda: trainer.optimizer.param_groups[0]["lr"],
                 monitor, values)
    return len(lrs), lrs, float(trainer.model.weight[0, 0]), callbacks[0].stopped_epoch if use[0] == "early" else None


def _outcome(run, scenario):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # both warn alike about a missing monitor; the outcome is what counts
        try:
            return run(*scenario)
        except ValueError:  # auto mode on a metric without a known direction
            return "ValueError"


@pytest.mark.parametrize("seed", range(4))
def test_random_scenarios_match_keras(seed):
    rng = random.Random(seed)
    for i in range(150):
        scenario = _scenario(rng)
        expected, got = _outcome(_run_keras, scenario), _outcome(_run_ours, scenario)
        if expected == "ValueError" or got == "ValueError":
            assert got == expected, (i, scenario)
            continue
        assert got[0] == expected[0] and got[3] == expected[3], (i, scenario, expected, got)
        assert got[1] == pytest.approx(expected[1], rel=1e-6), (i, scenario, expected, got)  # Keras keeps lr in fp32
        assert got[2] == expected[2], (i, scenario, expected, got)  # the same epoch's weights restored (or kept)
