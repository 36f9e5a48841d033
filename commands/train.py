"""train: the training options (shared with pipeline) and the command."""
from __future__ import annotations

import logging
import sys
from pathlib import Path

import click

from commands.options import floats

_DATA_OPTION = click.option(
    "--data", type=click.Path(path_type=Path), default=None,
    help="Image folder DIR/<class>/<image> (or DIR/train + DIR/val). Default: the built-in shapes data, generated "
         "once and cached.")
_MONITOR_MODES = click.Choice(["auto", "min", "max"])
_TRAIN_OPTIONS = (
    click.option("--epochs", type=click.IntRange(1, 100_000), default=None,
                 help="Maximum epochs. Default: 15 (with --resume: the run's own)."),
    click.option("--batch-size", type=click.IntRange(1, 65_536), default=32, show_default=True,
                 help="Images per step."),
    click.option("--optimizer", type=click.Choice(["adamw", "sgd"]), default="adamw", show_default=True,
                 help="AdamW, or SGD with momentum (the paper's; try --lr 0.005)."),
    click.option("--lr", type=float, default=1e-4, show_default=True, help="Initial learning rate, in (0, 10)."),
    click.option("--momentum", type=float, default=0.9, show_default=True, help="SGD momentum, in [0, 1]."),
    click.option("--weight-decay", type=float, default=5e-4, show_default=True, help="L2 weight decay, >= 0."),
    click.option("--warmup-epochs", type=click.IntRange(0, 100_000), default=0, show_default=True,
                 help="Linear learning-rate warm-up over the first N epochs."),
    click.option("--dropout", type=float, default=0.5, show_default=True,
                 help="Dropout before FC6 and FC7, in [0, 1)."),
    click.option("--val-split", type=float, default=0.2, show_default=True,
                 help="Per-class validation share, in (0, 1), when DIR has no train/ and val/ folders."),
    click.option("--seed", type=int, default=0, show_default=True,
                 help="Seed for the split, init, order and dropout (0 to 2**32-1)."),
    click.option("--skip-bad-images", is_flag=True, help="Skip unreadable image files (and report how many)."),
    click.option("--no-augment", is_flag=True, help="Turn all augmentation off."),
    click.option("--rotation", type=float, default=15.0, show_default=True,
                 help="Random rotation range in degrees (±), 0 to 180."),
    click.option("--zoom", callback=floats(2), default="0.8,1.2", show_default=True,
                 help="Random rescale range MIN,MAX (<1 zooms out, >1 zooms in)."),
    click.option("--hflip/--no-hflip", default=True, show_default=True, help="Random horizontal flip."),
    click.option("--vflip/--no-vflip", default=True, show_default=True, help="Random vertical flip."),
    click.option("--mean", callback=floats(3), default=None, help="Normalisation mean R,G,B. Default: ImageNet's."),
    click.option("--std", callback=floats(3), default=None, help="Normalisation std R,G,B. Default: ImageNet's."),
    click.option("--es-monitor", default="val_loss", show_default=True, help="EarlyStopping: metric to monitor."),
    click.option("--es-patience", type=click.IntRange(min=0), default=10, show_default=True,
                 help="EarlyStopping: epochs without improvement before stopping."),
    click.option("--es-min-delta", type=float, default=0.0, show_default=True,
                 help="EarlyStopping: smallest absolute change that counts as an improvement."),
    click.option("--es-mode", type=_MONITOR_MODES, default="auto", show_default=True,
                 help="EarlyStopping: direction of improvement."),
    click.option("--es-baseline", type=float, default=None, help="EarlyStopping: value the monitor must beat."),
    click.option("--es-start-from-epoch", type=click.IntRange(min=0), default=0, show_default=True,
                 help="EarlyStopping: epochs to wait before monitoring."),
    click.option("--restore-best-weights/--no-restore-best-weights", default=True, show_default=True,
                 help="EarlyStopping: finish with the best epoch's weights."),
    click.option("--rlr-monitor", default="val_accuracy", show_default=True,
                 help="ReduceLROnPlateau: metric to monitor."),
    click.option("--rlr-factor", type=float, default=0.5, show_default=True,
                 help="ReduceLROnPlateau: lr multiplier, in (0, 1)."),
    click.option("--rlr-patience", type=click.IntRange(min=0), default=2, show_default=True,
                 help="ReduceLROnPlateau: epochs without improvement before reducing."),
    click.option("--rlr-min-lr", type=float, default=1e-5, show_default=True,
                 help="ReduceLROnPlateau: lower bound on the lr."),
    click.option("--rlr-min-delta", type=float, default=1e-4, show_default=True,
                 help="ReduceLROnPlateau: smallest absolute change that counts as an improvement."),
    click.option("--rlr-cooldown", type=click.IntRange(min=0), default=0, show_default=True,
                 help="ReduceLROnPlateau: epochs to wait after a reduction."),
    click.option("--rlr-mode", type=_MONITOR_MODES, default="auto", show_default=True,
                 help="ReduceLROnPlateau: direction of improvement."),
    click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N."),
    click.option("--amp", type=click.Choice(["auto", "off", "bf16", "fp16"]), default="auto", show_default=True,
                 help="Mixed precision: auto = bf16 on CPUs with native bf16 and on CUDA (fp16 where bf16 is "
                      "missing)."),
    click.option("--workers", type=click.IntRange(-1, 1024), default=-1, show_default=True,
                 help="Data-loading processes (-1: one per two cores, 0: in the training process)."),
)


def train_options(*after_data):
    """Decorate a command with --data, then ``after_data``, then every other training option (train, pipeline)."""
    def decorate(f):
        for option in reversed((_DATA_OPTION, *after_data, *_TRAIN_OPTIONS)):
            f = option(f)
        return f
    return decorate


def train_config(opts: dict, out: Path | None = None):
    """The TrainConfig the training options describe, every value checked (a bad one is a usage error, exit 2)."""
    from trainer.config import TrainConfig

    config = TrainConfig.from_flat(**{**opts, "out": out})
    config.validate()
    return config



@click.command()
@train_options(
    click.option("--out", type=click.Path(path_type=Path), default=None,
                 help="Run folder. Default: runs/<timestamp>. A folder that holds a run is refused (see --overwrite)."),
    click.option("--overwrite", is_flag=True,
                 help="Replace the run in --out. The earlier run is set aside and deleted only once the new run has "
                      "finished its first epoch; if it fails before, the earlier run is put back."),
    click.option("--resume", type=click.Path(path_type=Path), default=None,
                 help="Continue the run in this folder after its last finished epoch (its saved settings apply; "
                      "--epochs may change the epoch count)."),
    click.option("--nproc-per-node", type=click.IntRange(min=1, max=1024), default=1, show_default=True,
                 help="Data-parallel processes on this machine, one per GPU (or on the CPU with --device cpu), "
                      "started through torchrun; --batch-size is then per process. For several machines, start "
                      "'torchrun ... cli.py train' yourself."))
@click.pass_obj
def train(obj: dict, **opts) -> None:
    """Train AlexNet on an image folder (default: the built-in shapes data)."""
    from deploy.render import train_summary
    from trainer import distributed
    from trainer.run import train as run_training

    config = train_config(opts, opts["out"])  # a bad option fails here, before torchrun starts any process
    if opts["resume"] is not None and not opts["resume"].is_dir():
        raise click.BadParameter(f"run folder not found: {opts['resume']}", param_hint="--resume")
    if distributed.relaunch(opts["nproc_per_node"], sys.argv):
        return  # this command line ran once per process under torchrun
    launch = distributed.env_context()
    if not launch.is_main:  # rank 0 speaks for the run; the others would repeat its logs and bars
        logging.getLogger().setLevel(logging.WARNING)
        obj["progress"] = False
    result = run_training(config, resume=opts["resume"], resume_epochs=opts["epochs"], show_progress=obj["progress"])
    if launch.is_main:
        click.echo("\n".join(train_summary(result)))
