"""Local training from the GUI: `fedseg train` in a child process, followed through its events.jsonl."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from app.services.child_process import FedsegChild
from segmentation.errors import ConfigError, DatasetError

# Names from segmentation.training, literal so that the GUI does not import torch to know them.
CHECKPOINT_NAME = "model.pt"
EVENTS_NAME = "events.jsonl"
LOG_NAME = "train.log"
DATASET_JSON = "dataset.json"


@dataclass(frozen=True)
class TrainingRequest:
    """What the training page asks for; `resume` continues the run folder's model.pt."""

    data: Path
    out: Path
    epochs: int
    augmentation: str = "gin"
    learning_rate: float = 1e-3
    batch_size: int = 16
    image_size: int = 96
    channels: tuple[int, ...] = (32, 64, 128, 256)
    resume: bool = False

    def arguments(self) -> list[str]:
        """`fedseg train` arguments; a resumed run keeps its model-defining options from the checkpoint."""
        arguments = ["train", "--data", str(self.data), "--out", str(self.out), "--epochs", str(self.epochs),
                     "--lr", repr(self.learning_rate), "--batch-size", str(self.batch_size)]
        if self.resume:
            return [*arguments, "--resume"]
        return [*arguments, "--aug", self.augmentation, "--image-size", str(self.image_size),
                "--channels", ",".join(map(str, self.channels))]

    def check(self) -> None:
        """Refuse at once what the child would refuse after seconds of start-up."""
        if not (self.data / DATASET_JSON).is_file():
            raise DatasetError(f"{self.data} is not a dataset folder (it has no {DATASET_JSON})")
        if self.epochs < 1:
            raise ConfigError(f"epochs must be at least 1, got {self.epochs}")
        has_checkpoint = (self.out / CHECKPOINT_NAME).is_file()
        if self.resume and not has_checkpoint:
            raise ConfigError(f"{self.out} holds no model to resume; start a new run instead")
        if not self.resume and has_checkpoint:
            raise ConfigError(f"{self.out} already holds a run; resume it or choose another run folder")


def previous_events(run_dir: Path) -> list[dict[str, Any]]:
    """The events of earlier sessions of a run (empty for a new run folder)."""
    from segmentation.events import read_events

    path = run_dir / EVENTS_NAME
    return list(read_events(path)) if path.is_file() else []


def can_resume(run_dir: Path) -> bool:
    return (run_dir / CHECKPOINT_NAME).is_file()


class TrainingJob(FedsegChild):
    """One `fedseg train` session for a TrainingRequest."""

    def __init__(self, request: TrainingRequest) -> None:
        request.check()
        super().__init__(request.arguments(), request.out / LOG_NAME, request.out / EVENTS_NAME)
        self.request = request
