"""Local training from the GUI: `fedseg train` in a child process, followed through its events.jsonl.

The plan (target spacing, patch size) is automatic: `fedseg train` makes it from the training data and
writes RUN/plan.json before it trains. An expert may override spacing and patch size; both are checked
here, before the child starts, so a typo is a sentence at once rather than a failed process later.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from app.services.child_process import FedsegChild
from segmentation.errors import ConfigError, DatasetError
from segmentation.plan import check_patch_size, check_target_spacing, read_plan
from segmentation.settings import CHECKPOINT_NAME, EVENTS_NAME, FEDGIN_CHANNELS, PLAN_NAME, NetworkConfig

LOG_NAME = "train.log"
DATASET_JSON = "dataset.json"
AUTOMATIC_PLAN = "automatic from the training data"
SPACING_AXES = ("X", "Y", "Z")


@dataclass(frozen=True)
class PlanOverride:
    """An expert's target spacing (mm, x y z) and patch size (array order: rows, columns) in place of the
    automatic plan's; `fedseg train --spacing --patch-size` applies them."""

    spacing: tuple[float, float, float]
    patch_size: tuple[int, ...]

    def check(self, size_multiple: int) -> None:
        """Refuse what the plan would refuse, with the plan's own checks."""
        check_target_spacing(self.spacing)
        check_patch_size(self.patch_size, size_multiple)

    def arguments(self) -> list[str]:
        return ["--spacing", ",".join(f"{value:g}" for value in self.spacing),
                "--patch-size", ",".join(map(str, self.patch_size))]


@dataclass(frozen=True)
class TrainingRequest:
    """What the training page asks for; `resume` continues the run folder's model.pt (and its plan);
    `plan_override` replaces the automatic plan's spacing and patch size of a new run."""

    data: Path
    out: Path
    epochs: int
    augmentation: str = "gin"
    learning_rate: float = 1e-3
    batch_size: int = 16
    channels: tuple[int, ...] = FEDGIN_CHANNELS
    resume: bool = False
    plan_override: PlanOverride | None = None

    def arguments(self) -> list[str]:
        """`fedseg train` arguments; a resumed run keeps its model-defining options and plan from the
        checkpoint."""
        arguments = ["train", "--data", str(self.data), "--out", str(self.out), "--epochs", str(self.epochs),
                     "--lr", repr(self.learning_rate), "--batch-size", str(self.batch_size)]
        if self.resume:
            return [*arguments, "--resume"]
        override = self.plan_override.arguments() if self.plan_override is not None else []
        return [*arguments, "--aug", self.augmentation, "--channels", ",".join(map(str, self.channels)),
                *override]

    def check(self) -> None:
        """Refuse at once what the child would refuse after seconds of start-up."""
        if not (self.data / DATASET_JSON).is_file():
            raise DatasetError(f"{self.data} is not a dataset folder (it has no {DATASET_JSON})")
        if self.epochs < 1:
            raise ConfigError(f"epochs must be at least 1, got {self.epochs}")
        try:
            network = NetworkConfig(channels=self.channels)
        except ValueError as error:
            raise ConfigError(f"U-Net widths: {error}") from None
        if self.plan_override is not None:
            if self.resume:
                raise ConfigError("a resumed run keeps the plan it was trained with; turn Override plan off "
                                  "to resume, or start a new run")
            self.plan_override.check(network.size_multiple)
        has_checkpoint = (self.out / CHECKPOINT_NAME).is_file()
        if self.resume and not has_checkpoint:
            raise ConfigError(f"{self.out} holds no model to resume; start a new run instead")
        if self.resume and (done := trained_epochs(self.out)) >= self.epochs:
            raise ConfigError(f"this run has trained {done} epochs already; set Epochs above {done} to "
                              "train on")
        if not self.resume and has_checkpoint:
            raise ConfigError(f"{self.out} already holds a run; resume it or choose another run folder")


def previous_events(run_dir: Path) -> list[dict[str, Any]]:
    """The events of earlier sessions of a run (empty for a new run folder)."""
    from segmentation.events import read_events

    path = run_dir / EVENTS_NAME
    return list(read_events(path)) if path.is_file() else []


def trained_epochs(run_dir: Path) -> int:
    """The last epoch a run's events say finished (0 for none)."""
    return max((int(event["epoch"]) for event in previous_events(run_dir)
                if event.get("kind") == "epoch" and isinstance(event.get("epoch"), int)), default=0)


def can_resume(run_dir: Path) -> bool:
    return (run_dir / CHECKPOINT_NAME).is_file()


class RunPlan:
    """The plan line of a run folder: RUN/plan.json's description once the run has one, else automatic.

    A plan.json beside no model is left from a start that never trained; it counts only while this
    session's job for that folder runs (which writes a fresh one). The file is read again only when it
    changes, since the page asks on every refresh.
    """

    def __init__(self) -> None:
        self._seen: tuple[Path, int, int, int] | None = None
        self._text = AUTOMATIC_PLAN

    def describe(self, run_dir: Path | None, started: bool = False) -> str:
        """One line: the plan in force for `run_dir`; `started` says a job of this session trains it."""
        if run_dir is None or not (started or can_resume(run_dir)):
            return AUTOMATIC_PLAN
        path = run_dir / PLAN_NAME
        try:
            status = path.stat()
        except OSError:
            return AUTOMATIC_PLAN
        key = (path, status.st_ino, status.st_mtime_ns, status.st_size)  # a rewrite is a new file
        if key != self._seen:
            self._seen, self._text = key, _plan_text(path)
        return self._text


def _plan_text(path: Path) -> str:
    try:
        plan = read_plan(path)
    except ConfigError as error:
        return f"unreadable: {error}"
    overridden = f" (set by hand: {', '.join(name.replace('_', ' ') for name in plan.overridden)})" \
        if plan.overridden else ""
    return plan.describe() + overridden


class TrainingJob(FedsegChild):
    """One `fedseg train` session for a TrainingRequest."""

    def __init__(self, request: TrainingRequest) -> None:
        request.check()
        super().__init__(request.arguments(), request.out / LOG_NAME, request.out / EVENTS_NAME)
        self.request = request

    def start(self) -> None:
        """Start the child; a new run first drops a plan.json left by a start that never trained, so the
        page never shows it as this run's plan (the child writes the run's own before it trains)."""
        if not self.request.resume:
            (self.request.out / PLAN_NAME).unlink(missing_ok=True)
        super().start()
