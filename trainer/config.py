"""TrainConfig: every training setting with its default, one field per CLI option (``--batch-size`` ↔ batch_size)."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

from core.contract import is_finite_number
from core.errors import UsageError
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

    def validate(self) -> None:
        """Every value in range and finite, checked before anything is read or written (a NaN learning rate would
        otherwise train a NaN model, a seed beyond 2**32 overflow the generators).

        Raises:
            UsageError: naming the option (``--lr``), what it must be and what it is.
        """
        a, es, rl = self.augment, self.early_stopping, self.reduce_lr
        checks = [
            ("--epochs", self.epochs, 1, 100_000, True), ("--batch-size", self.batch_size, 1, 65_536, True),
            ("--lr", self.lr, 0, 10, False), ("--momentum", self.momentum, 0, 1, True),
            ("--weight-decay", self.weight_decay, 0, 10, True),
            ("--warmup-epochs", self.warmup_epochs, 0, 100_000, True),
            ("--dropout", self.dropout, 0, 1, "max_open"), ("--val-split", self.val_split, 0, 1, False),
            ("--seed", self.seed, 0, 2**32 - 1, True), ("--rotation", a.rotation_deg, 0, 180, True),
            ("--zoom MIN", a.zoom[0], 0, 100, "max_closed"), ("--zoom MAX", a.zoom[1], 0, 100, "max_closed"),
            ("--es-patience", es.patience, 0, 100_000, True), ("--es-min-delta", es.min_delta, -1e9, 1e9, True),
            ("--es-start-from-epoch", es.start_from_epoch, 0, 100_000, True),
            ("--rlr-factor", rl.factor, 0, 1, False), ("--rlr-patience", rl.patience, 0, 100_000, True),
            ("--rlr-min-lr", rl.min_lr, 0, 10, True), ("--rlr-min-delta", rl.min_delta, -1e9, 1e9, True),
            ("--rlr-cooldown", rl.cooldown, 0, 100_000, True), ("--workers", self.workers, -1, 1024, True)]
        checks += [("--es-baseline", es.baseline, -1e30, 1e30, True)] if es.baseline is not None else []
        checks += [(f"--mean[{i}]", v, -1e6, 1e6, True) for i, v in enumerate(self.mean)]
        checks += [(f"--std[{i}]", v, 0, 1e6, "max_closed") for i, v in enumerate(self.std)]
        for option, value, low, high, closed in checks:
            _check_range(option, value, low, high, closed)
        if a.zoom[0] > a.zoom[1]:
            raise UsageError(f"--zoom needs MIN <= MAX, got {a.zoom[0]:g},{a.zoom[1]:g}")
        if len(self.mean) != 3 or len(self.std) != 3:
            raise UsageError(f"--mean and --std take 3 values (R,G,B), got {len(self.mean)} and {len(self.std)}")
        for option, value, allowed in (("--optimizer", self.optimizer, ("adamw", "sgd")),
                                       ("--amp", self.amp, ("auto", "off", "bf16", "fp16")),
                                       ("--es-mode", es.mode, ("auto", "min", "max")),
                                       ("--rlr-mode", rl.mode, ("auto", "min", "max"))):
            if value not in allowed:
                raise UsageError(f"{option} {value!r}; expected one of {', '.join(allowed)}")

    @classmethod
    def from_flat(cls, **opts: Any) -> "TrainConfig":
        """From flat settings named as the command-line options are (``rotation``, ``es_patience``, ``rlr_factor``,
        ``no_augment``...); settings it does not know are ignored, missing ones keep their defaults."""
        def pick(prefix: str, config_cls) -> dict[str, Any]:
            names = {f.name for f in fields(config_cls)}
            return {k[len(prefix):]: v for k, v in opts.items() if k.startswith(prefix) and k[len(prefix):] in names
                    and v is not None}

        augment = AugmentConfig(**{k: opts[k] for k in ("zoom", "hflip", "vflip") if opts.get(k) is not None},
                                **({"rotation_deg": opts["rotation"]} if opts.get("rotation") is not None else {}),
                                enabled=not opts.get("no_augment", False))
        plain = {f.name: opts[f.name] for f in fields(cls) if opts.get(f.name) is not None
                 and f.name not in ("augment", "early_stopping", "reduce_lr")}
        for key in ("data", "out"):
            if key in plain:
                plain[key] = str(plain[key])
        restore = opts.get("restore_best_weights")
        es = pick("es_", EarlyStoppingConfig) | ({} if restore is None else {"restore_best_weights": restore})
        return cls(**plain, augment=augment, early_stopping=EarlyStoppingConfig(**es),
                   reduce_lr=ReduceLRConfig(**pick("rlr_", ReduceLRConfig)))

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


def _check_range(option: str, value: Any, low: float, high: float, closed: bool | str) -> None:
    """``low <= value <= high`` and finite; ``closed`` False excludes both ends, "max_open" the top, "max_closed" the
    bottom (a zoom, a std of 0 makes no sense)."""
    ok = is_finite_number(value)
    if ok:
        above = value > low if closed in (False, "max_closed") else value >= low
        below = value < high if closed in (False, "max_open") else value <= high
        ok = above and below
    if not ok:
        left = "(" if closed in (False, "max_closed") else "["
        right = ")" if closed in (False, "max_open") else "]"
        bounds = ", ".join(format(b, "g") if isinstance(b, float) else str(b) for b in (low, high))
        raise UsageError(f"{option} must be a finite number in {left}{bounds}{right}, got {value!r}")
