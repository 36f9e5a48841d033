"""TrainConfig: every training setting with its default, one field per CLI option (``--batch-size`` ↔ batch_size)."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

from trainer.data import IMAGENET_MEAN, IMAGENET_STD, AugmentConfig


@dataclass(frozen=True)
class EarlyStoppingConfig:
    monitor: str = "val_loss"
    min_delta: float = 0.0
    patience: int = 10               # the seed's EarlyStopping(patience=10)
    mode: str = "auto"
    baseline: float | None = None
    restore_best_weights: bool = True  # Keras defaults to False; a deployment tool should ship the best epoch
    start_from_epoch: int = 0


@dataclass(frozen=True)
class ReduceLRConfig:
    monitor: str = "val_accuracy"    # the seed's ReduceLROnPlateau(monitor='val_accuracy', patience=2, ...)
    factor: float = 0.5
    patience: int = 2
    min_lr: float = 1e-5
    min_delta: float = 1e-4          # Keras's default
    cooldown: int = 0
    mode: str = "auto"
    verbose: int = 1


@dataclass(frozen=True)
class TrainConfig:
    data: str | None = None          # image folder DIR/<class>/<image>; None = the built-in shapes data
    out: str | None = None           # run folder; None = runs/<timestamp>
    epochs: int = 15                 # >= 90 % val accuracy on the built-in data, with margin (91 % at epoch 12)
    batch_size: int = 32             # many small steps train this BN-free net faster on small data sets
    # AdamW: from scratch on small data, SGD (lr 0.01, momentum 0.9) left this BN-free net at chance for many epochs
    optimizer: str = "adamw"         # "adamw" or "sgd" (the paper's: momentum 0.9, weight decay 5e-4)
    lr: float = 1e-4
    momentum: float = 0.9
    weight_decay: float = 5e-4
    warmup_epochs: int = 0           # linear lr warm-up (AdamW at 1e-4 needs none; 3 points behind at epoch 12 with 1)
    dropout: float = 0.5
    val_split: float = 0.2
    seed: int = 0
    skip_bad_images: bool = False
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    early_stopping: EarlyStoppingConfig = field(default_factory=EarlyStoppingConfig)
    reduce_lr: ReduceLRConfig = field(default_factory=ReduceLRConfig)
    device: str = "auto"             # "auto" | "cpu" | "cuda" | "cuda:N"
    amp: str = "auto"                # "auto" (bf16 on CPUs with native bf16, fp16 on CUDA) | "off" | "bf16" | "fp16"
    workers: int = -1                # DataLoader worker processes; -1 = chosen from the core count
    num_classes: int | None = None   # filled in from the data
    overwrite: bool = False          # replace a run already in ``out``; otherwise such a folder is refused

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TrainConfig":
        nested = {"augment": AugmentConfig, "early_stopping": EarlyStoppingConfig, "reduce_lr": ReduceLRConfig}
        known = {f.name for f in fields(cls)}
        kwargs: dict[str, Any] = {}
        for key, value in d.items():
            if key not in known:
                continue  # tolerate fields from newer versions
            if key in nested and isinstance(value, dict):
                value = nested[key](**{k: tuple(v) if isinstance(v, list) else v for k, v in value.items()})
            elif isinstance(value, list):
                value = tuple(value)
            kwargs[key] = value
        return cls(**kwargs)
