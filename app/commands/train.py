"""`fedseg train`: train a model on one dataset folder, with a progress bar, checkpoints and resume.

The run folder receives plan.json (the plan given with --plan, else one made from the training data),
model.pt after every epoch, events.jsonl and history.csv. Ctrl-C finishes
the current step, saves the checkpoint and exits 130; a second Ctrl-C interrupts at once (the
checkpoint is still saved).
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from pathlib import Path

from segmentation.settings import AUGMENTATION_NAMES as AUGMENTATION_CHOICES

EXIT_INTERRUPTED = 130

# Defaults of options that may differ on --resume; None in the parser means "not given".
DEFAULTS = {"aug": "gin", "lr": 1e-3, "batch_size": 16, "channels": "32,64,128,256", "dim": 2, "seed": 0}


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "train", help="train a segmentation model on a dataset folder",
        description="Train a U-Net on an MSD-style dataset folder (dataset.json + images and labels). "
                    "Writes RUN/model.pt after every epoch, RUN/events.jsonl and RUN/history.csv.",
    )
    parser.add_argument("--data", required=True, type=Path, help="training dataset folder")
    parser.add_argument("--val", type=Path,
                        help="validation dataset folder (default: the training folder's test split)")
    parser.add_argument("--aug", choices=AUGMENTATION_CHOICES,
                        help=f"augmentation (default {DEFAULTS['aug']})")
    parser.add_argument("--epochs", required=True, type=int, help="total number of epochs of the run")
    parser.add_argument("--out", required=True, type=Path, help="run folder (created if missing)")
    parser.add_argument("--lr", type=float, help=f"learning rate (default {DEFAULTS['lr']})")
    parser.add_argument("--batch-size", type=int, help=f"patches per step (default {DEFAULTS['batch_size']})")
    parser.add_argument("--plan", type=Path,
                        help="plan.json to follow (default: made from the training data, see `fedseg plan`)")
    parser.add_argument("--spacing", help="expert override of the plan's target spacing, X,Y,Z in mm")
    parser.add_argument("--patch-size", help="expert override of the plan's patch size, e.g. 128,128 (2D)")
    parser.add_argument("--channels", help=f"U-Net widths per level (default {DEFAULTS['channels']})")
    parser.add_argument("--dim", type=int, choices=(2, 3), help="2D slices or 3D volumes (default 2)")
    parser.add_argument("--seed", type=int, help="random seed (default 0)")
    parser.add_argument("--resume", action="store_true", help="continue RUN/model.pt up to --epochs in total")
    parser.add_argument("--cache", type=Path, help="slice cache folder (default: the user's cache folder)")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from app.progress import EventProgressBar
    from segmentation.events import EventWriter
    from segmentation.settings import CHECKPOINT_NAME, EVENTS_NAME
    from segmentation.training import run_training

    if args.epochs < 1:
        from segmentation.errors import ConfigError

        raise ConfigError(f"--epochs must be at least 1, got {args.epochs}")
    dataset, validation = _load_data(args)
    algorithm = _resume(args, dataset) if args.resume else _start(args, dataset)
    checkpoint_path = args.out / CHECKPOINT_NAME
    if algorithm.epoch >= args.epochs:
        print(f"{checkpoint_path} already has {algorithm.epoch} epochs; ask for more with --epochs")
        return 0
    bar = EventProgressBar("train")
    with StopOnSigint() as stop, EventWriter(args.out / EVENTS_NAME, job="train", listeners=(bar,)) as events:
        result = run_training(algorithm, dataset, args.epochs, args.out, events, validation, stop)
    bar.close()
    if result.stopped:
        print(f"fedseg: stopped at epoch {result.epoch}; saved {checkpoint_path} (continue with --resume)",
              file=sys.stderr)
        return EXIT_INTERRUPTED
    summary = f"trained {result.epoch} epochs, loss {result.loss:.4f}"
    if "dice" in result.metrics:
        summary += f", validation Dice {result.metrics['dice']:.3f}"
    print(f"{summary}; saved {checkpoint_path}")
    return 0


def _load_data(args: argparse.Namespace):
    """The training dataset and the labelled validation cases (--val's test split, else its training
    split; without --val the training folder's test split)."""
    from segmentation.datalist import load_dataset

    dataset = load_dataset(args.data)
    if args.val is not None:
        val = load_dataset(args.val)
        cases = val.test if any(case.label for case in val.test) else val.training
    else:
        cases = dataset.test
    return dataset, tuple(case for case in cases if case.label is not None)


def _start(args: argparse.Namespace, dataset):
    from segmentation.algorithm import SegmentationAlgorithm
    from segmentation.errors import ConfigError
    from segmentation.settings import CHECKPOINT_NAME, NetworkConfig, TrainingConfig

    if (args.out / CHECKPOINT_NAME).exists():
        raise ConfigError(
            f"{args.out / CHECKPOINT_NAME} exists; pass --resume to continue it or choose another --out"
        )
    value = {name: getattr(args, name) if getattr(args, name) is not None else default
             for name, default in DEFAULTS.items()}
    try:
        network = NetworkConfig(spatial_dims=value["dim"], out_channels=len(dataset.labels),
                                channels=_channels(value["channels"]))
    except ValueError as error:
        raise ConfigError(f"network settings: {error}") from None
    config = TrainingConfig(
        plan=_plan(args, dataset, network, value["batch_size"]), network=network,
        augmentation=value["aug"], learning_rate=value["lr"], batch_size=value["batch_size"],
        seed=value["seed"], cache_dir=args.cache,
    )
    return SegmentationAlgorithm(config)


def _plan(args: argparse.Namespace, dataset, network, batch_size: int):
    """--plan's plan (which must name the dataset's labels), else the automatic plan of the training cases
    with --spacing / --patch-size applied."""
    from segmentation.errors import ConfigError, DatasetError
    from segmentation.fingerprint import plan_for_cases
    from segmentation.plan import read_plan

    spacing = parse_numbers(args.spacing, "--spacing", float, (3,))
    patch_size = parse_numbers(args.patch_size, "--patch-size", int, (network.spatial_dims,))
    if args.plan is None:
        plan, _ = plan_for_cases(dataset.training, dataset.labels, network, batch_size, spacing, patch_size)
        return plan
    if spacing is not None or patch_size is not None:
        raise ConfigError("--spacing and --patch-size change an automatic plan; edit the --plan file instead")
    plan = read_plan(args.plan)
    if plan.labels != dataset.labels:
        raise DatasetError(f"{args.plan} plans labels {plan.labels} but {args.data} has {dataset.labels}")
    return plan


def parse_numbers(text: str | None, option: str, kind: type, counts: tuple[int, ...]) -> tuple | None:
    """'0.7,0.7,2.5' -> (0.7, 0.7, 2.5): positive numbers, as many as `counts` allows; None stays None."""
    from segmentation.errors import ConfigError

    if text is None:
        return None
    try:
        values = tuple(kind(part) for part in text.split(","))
    except ValueError:
        raise ConfigError(f"{option} needs comma-separated {kind.__name__} values, got {text!r}") from None
    if len(values) not in counts or any(not value > 0 for value in values):
        raise ConfigError(f"{option} needs {' or '.join(map(str, counts))} positive values, got {text!r}")
    return values


def _resume(args: argparse.Namespace, dataset):
    """The run's checkpoint as an algorithm; model-defining options must match it, others override."""
    from segmentation.algorithm import SegmentationAlgorithm
    from segmentation.checkpoint import load_checkpoint
    from segmentation.errors import CheckpointError, ConfigError, DatasetError
    from segmentation.settings import CHECKPOINT_NAME

    path = args.out / CHECKPOINT_NAME
    if not path.is_file():
        raise CheckpointError(f"--resume: {path} does not exist; start the run without --resume")
    checkpoint = load_checkpoint(path)
    if args.plan is not None or args.spacing is not None or args.patch_size is not None:
        raise ConfigError(f"{path} keeps the plan it was trained with; drop --plan, --spacing and "
                          "--patch-size or start a new run")
    stored = {"aug": checkpoint.augmentation, "dim": checkpoint.network.spatial_dims,
              "channels": checkpoint.network.channels}
    given = {"aug": args.aug, "dim": args.dim,
             "channels": _channels(args.channels) if args.channels is not None else None}
    for name, value in given.items():
        if value is not None and value != stored[name]:
            option = "--" + name.replace("_", "-")
            shown = ",".join(map(str, stored[name])) if name == "channels" else stored[name]
            raise ConfigError(f"{path} was trained with {option} {shown}; drop {option} or start a new run")
    if checkpoint.labels != dataset.labels:
        raise DatasetError(
            f"{args.data} has labels {dataset.labels} but {path} was trained on {checkpoint.labels}"
        )
    changes = {"learning_rate": args.lr, "batch_size": args.batch_size, "seed": args.seed,
               "cache_dir": args.cache}
    return SegmentationAlgorithm.from_checkpoint(
        checkpoint, **{name: value for name, value in changes.items() if value is not None}
    )


def _channels(text: str) -> tuple[int, ...]:
    from segmentation.errors import ConfigError

    try:
        return tuple(int(part) for part in text.split(","))
    except ValueError:
        raise ConfigError(
            f"--channels needs comma-separated integers like 32,64,128,256, got {text!r}"
        ) from None


class StopOnSigint:
    """A stop() callable for training: the first Ctrl-C asks for a clean stop after the current step,
    a second one raises KeyboardInterrupt. Installed only in the main thread, where signals arrive."""

    def __init__(self) -> None:
        self.requested = False
        self._previous = None

    def __call__(self) -> bool:
        return self.requested

    def __enter__(self) -> StopOnSigint:
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
            self._previous = None

    def _handle(self, signum: int, frame: object) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        print("\nfedseg: stopping after this step and saving (Ctrl-C again to stop at once)", file=sys.stderr)
