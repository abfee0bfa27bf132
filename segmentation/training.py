"""Training hyperparameters, the result of a training call, and a training run's files on disk.

A run folder holds model.pt (checkpoint after every epoch), events.jsonl (the job's event stream) and
history.csv (one row per epoch: loss and validation metrics), so a run can be watched, resumed and
compared with nothing but the folder.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from segmentation.atomic import atomic_open
from segmentation.checkpoint import save_checkpoint
from segmentation.errors import ConfigError
from segmentation.events import EventWriter
from segmentation.network import NetworkConfig
from segmentation.preprocessing import Preprocessing
from segmentation.transforms import AUGMENTATIONS

if TYPE_CHECKING:
    from segmentation.algorithm import SegmentationAlgorithm
    from segmentation.datalist import CaseEntry, DatasetIndex

CHECKPOINT_NAME = "model.pt"
EVENTS_NAME = "events.jsonl"
HISTORY_NAME = "history.csv"

# Hyperparameters that may change between sessions of one run (e.g. on --resume); the network,
# preprocessing and augmentation define the model and may not.
_HYPERPARAMETERS = (
    "learning_rate", "weight_decay", "batch_size", "seed", "proximal_mu", "num_workers",
    "foreground_slice_fraction", "augmentation_probability", "learning_rate_schedule",
)
LEARNING_RATE_SCHEDULES = ("constant", "cosine")


@dataclass(frozen=True)
class TrainingConfig:
    """Everything that shapes local training.

    proximal_mu > 0 adds FedProx's mu/2 * ||w - w_start||^2, w_start being the weights at the start of
    each train() call (the global model in a federated round). foreground_slice_fraction drops samples
    whose labelled share is below it (0 keeps all). cache_dir None means slice_cache.default_cache_dir().
    augmentation_probability is the share of samples each batch augments: the rest keep the in-modality
    Dice of unaugmented training while the augmented ones teach the unseen modalities (docs/augmentations.md).
    learning_rate_schedule "cosine" decays the rate to zero over each train() call, so a fixed step
    budget ends on a settled model rather than a noisy last step; "constant" suits federated rounds.
    """

    network: NetworkConfig = field(default_factory=NetworkConfig)
    preprocessing: Preprocessing = field(default_factory=Preprocessing)
    augmentation: str = "gin"
    augmentation_probability: float = 0.3
    learning_rate_schedule: str = "constant"
    learning_rate: float = 1e-3
    weight_decay: float = 1e-4
    batch_size: int = 16
    seed: int = 0
    proximal_mu: float = 0.0
    num_workers: int = 0
    foreground_slice_fraction: float = 0.0
    cache_dir: Path | None = None

    def __post_init__(self) -> None:
        if self.augmentation not in AUGMENTATIONS:
            raise ConfigError(
                f"augmentation {self.augmentation!r} is unknown; choose one of: {', '.join(AUGMENTATIONS)}"
            )
        checks = {
            "learning_rate": self.learning_rate > 0,
            "weight_decay": self.weight_decay >= 0,
            "batch_size": self.batch_size >= 1,
            "proximal_mu": self.proximal_mu >= 0,
            "num_workers": self.num_workers >= 0,
            "foreground_slice_fraction": 0.0 <= self.foreground_slice_fraction < 1.0,
            "augmentation_probability": 0.0 <= self.augmentation_probability <= 1.0,
        }
        if self.learning_rate_schedule not in LEARNING_RATE_SCHEDULES:
            raise ConfigError(
                f"learning_rate_schedule {self.learning_rate_schedule!r} is unknown; choose one of: "
                + ", ".join(LEARNING_RATE_SCHEDULES)
            )
        for name, valid in checks.items():
            if not valid:
                raise ConfigError(f"{name} = {getattr(self, name)} is out of range")
        multiple = self.network.size_multiple
        sizes = [*self.preprocessing.image_size]
        if self.network.spatial_dims == 3:
            sizes.append(self.preprocessing.depth)
        if any(size < multiple or size % multiple for size in sizes):
            raise ConfigError(
                f"image size {tuple(sizes)} must be multiples of {multiple} for a U-Net with "
                f"{len(self.network.channels)} levels"
            )

    def hyperparameters(self) -> dict[str, Any]:
        """The plain-valued settings stored in a checkpoint beside network and preprocessing."""
        values = asdict(self)
        return {name: values[name] for name in _HYPERPARAMETERS}

    def with_hyperparameters(self, values: dict[str, Any]) -> TrainingConfig:
        """This config with known hyperparameters replaced (unknown keys are ignored)."""
        return replace(self, **{name: values[name] for name in _HYPERPARAMETERS if name in values})


def learning_rate_schedule(config: TrainingConfig, steps: int) -> list[float]:
    """The learning rate of each of `steps` optimisation steps under the config's schedule."""
    if config.learning_rate_schedule == "constant":
        return [config.learning_rate] * steps
    return [0.5 * config.learning_rate * (1.0 + math.cos(math.pi * step / steps)) for step in range(steps)]


@dataclass(frozen=True)
class TrainResult:
    """Outcome of one train() call. num_examples (training samples per epoch) weights federated averaging."""

    epochs: int
    epoch: int
    loss: float
    num_examples: int
    stopped: bool
    metrics: dict[str, float] = field(default_factory=dict)


def run_training(
    algorithm: SegmentationAlgorithm,
    dataset: DatasetIndex,
    total_epochs: int,
    out: Path,
    events: EventWriter,
    validation: Sequence[CaseEntry] = (),
    stop: Callable[[], bool] | None = None,
) -> TrainResult:
    """Train until `total_epochs` epochs are done, checkpointing into `out` after every epoch.

    A stop request (stop() true, or KeyboardInterrupt) saves the current weights, emits "stopped"
    and returns with stopped=True; the interrupted epoch is repeated on resume.
    """
    checkpoint_path = out / CHECKPOINT_NAME

    def save(epoch: int) -> None:
        save_checkpoint(algorithm.to_checkpoint(train_modality=dataset.modality), checkpoint_path)
        write_history(algorithm.history, out / HISTORY_NAME)
        events.emit("checkpoint", epoch=epoch)

    events.emit("started", epochs=total_epochs, start_epoch=algorithm.epoch)
    try:
        result = algorithm.train(
            dataset, max(0, total_epochs - algorithm.epoch), events=events, stop=stop,
            validation=validation, on_epoch=save,
        )
    except KeyboardInterrupt:
        result = TrainResult(0, algorithm.epoch, float("nan"), 0, stopped=True)
    if result.stopped:
        save(algorithm.epoch)
        events.emit("stopped", epoch=algorithm.epoch)
    else:
        if not checkpoint_path.exists():
            save(algorithm.epoch)
        events.emit("finished", metrics={"loss": result.loss, **result.metrics})
    return result


def write_history(history: Sequence[dict[str, Any]], path: Path) -> None:
    """One CSV row per epoch; columns are every key seen, in order of first appearance."""
    columns: dict[str, None] = {}
    for record in history:
        columns.update(dict.fromkeys(record))
    with atomic_open(path, "w", newline="", encoding="utf-8") as stream:
        writer = csv.DictWriter(stream, fieldnames=list(columns))
        writer.writeheader()
        writer.writerows(history)
