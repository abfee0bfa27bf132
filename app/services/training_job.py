"""Local training from the GUI: `fedseg train` in a child process, followed through its events.jsonl.

The plan (target spacing, patch size) is automatic: `fedseg train` makes it from the training data and
writes RUN/plan.json before it trains. An expert may override spacing and patch size; both are checked
here, before the child starts, so a typo is a sentence at once rather than a failed process later.

A run's length is proposed in steps, not epochs: an epoch is a pass over every slice of every training
case, so a fixed epoch count is a few seconds on a small dataset and days on a large one. The page turns
the remembered length in steps into the epochs nearest to it on the chosen dataset (TrainingLength).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from app.models.training import JobState, TrainingRunModel
from app.services.child_process import EXIT_INTERRUPTED, FedsegChild
from segmentation.datalist import DATASET_JSON, CaseEntry, load_dataset
from segmentation.errors import ConfigError, DatasetError, FedSegError
from segmentation.geometry import canonical_axes
from segmentation.io.formats import detect_format
from segmentation.plan import check_patch_size, check_target_spacing, read_plan
from segmentation.settings import CHECKPOINT_NAME, EVENTS_NAME, FEDGIN_CHANNELS, PLAN_NAME, NetworkConfig

LOG_NAME = "train.log"
AUTOMATIC_PLAN = "automatic from the training data"
SPACING_AXES = ("X", "Y", "Z")
SIZE_SAMPLE = 8  # training cases whose headers are read to size a dataset (evenly spread, scaled to all)


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


@dataclass(frozen=True)
class TrainingLength:
    """A run's length on one dataset: `epochs` passes of `steps_per_epoch` batches."""

    epochs: int
    steps_per_epoch: int

    @classmethod
    def of(cls, epochs: int, slices: int, batch_size: int) -> TrainingLength:
        """`epochs` on a dataset of `slices` 2D slices, which an epoch of a 2D plan cuts into about one
        patch each (segmentation.patches)."""
        return cls(epochs, max(1, math.ceil(slices / max(batch_size, 1))))

    def nearest(self, steps: int) -> TrainingLength:
        """The epochs of this dataset nearest to `steps` optimisation steps, one at least."""
        return replace(self, epochs=max(1, round(steps / self.steps_per_epoch)))

    @property
    def steps(self) -> int:
        return self.epochs * self.steps_per_epoch

    def describe(self) -> str:
        """'about 496 steps, 16 per epoch'."""
        return f"about {self.steps:,} steps, {self.steps_per_epoch:,} per epoch"


def dataset_slices(data: Path | None) -> int | None:
    """training_slices() of a dataset folder; None where there is none or it cannot be read (its own
    check says why when training starts)."""
    if data is None or not (data / DATASET_JSON).is_file():
        return None
    try:
        return training_slices(data)
    except FedSegError:
        return None


def training_slices(data: Path) -> int:
    """About how many 2D slices the training cases of a dataset folder hold, from the headers of up to
    SIZE_SAMPLE of them scaled to all, so that sizing a dataset of hundreds of studies stays quick.
    A FedSegError says when the folder or a sampled study cannot be read."""
    cases = load_dataset(data).training
    if not cases:
        raise DatasetError(f"{data} has no training cases")
    sample = cases[::math.ceil(len(cases) / SIZE_SAMPLE)]
    return round(sum(map(_axial_slices, sample)) * len(cases) / len(sample))


def _axial_slices(case: CaseEntry) -> int:
    """A study's slices along its axis nearest to S (what a 2D plan cuts) from its header alone; a DICOM
    folder counts its files, one per slice of the usual axial series."""
    if case.image.is_dir():
        return sum(1 for path in case.image.rglob("*") if path.is_file())
    from segmentation.io.readers import read_header

    image_format = detect_format(case.image)
    if image_format.image_io is None:  # a single DICOM file: one slice
        return 1
    reader = read_header(case.image, image_format)
    size = reader.GetSize()
    return 1 if len(size) < 3 else int(size[canonical_axes(reader.GetDirection())[2]])


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


class TrainingSession:
    """The Training page's job, without Qt: begin() starts (or resumes) `fedseg train` for a request and
    replays a resumed run's earlier events into the model; poll() feeds it the child's new events and,
    once the child has exited, its outcome; stop() asks it to finish its step and save."""

    def __init__(self, model: TrainingRunModel) -> None:
        self.model = model
        self.job: TrainingJob | None = None

    @property
    def active(self) -> bool:
        return self.job is not None and self.job.running

    def begin(self, request: TrainingRequest) -> None:
        """Start the child; a FedSegError or OSError says why it cannot (nothing is started then)."""
        if self.active:
            raise ConfigError("a training run is in progress; stop it first")
        job = TrainingJob(request)
        history = previous_events(request.out) if request.resume else []
        job.start()
        self.job = job
        self.model.reset()
        self.model.apply_all(history)
        self.model.set_state(JobState.STARTING, "starting the training process…")

    def stop(self) -> None:
        if self.active:
            self.job.request_stop()  # type: ignore[union-attr]
            self.model.set_state(JobState.STOPPING, "stopping after this step and saving the model…")

    def poll(self) -> str | None:
        """Take the child's new events; once it has exited, set the final state and return the failure's
        sentence when it failed (None while it runs, when it ended well, and with no job)."""
        job = self.job
        if job is None:
            return None
        self.model.apply_all(job.events())
        if job.running or not self.model.state.active:
            return None
        self.model.apply_all(job.events())
        code = job.exit_code
        if code not in (0, EXIT_INTERRUPTED):
            message = job.failure_message()
            self.model.set_state(JobState.FAILED, message)
            return message
        if self.model.state.active:  # the child ended before its final event (e.g. stopped while starting)
            stopped = "stopped before training began" if code else "training finished"
            self.model.set_state(JobState.STOPPED if code else JobState.FINISHED, stopped)
        return None

    @property
    def checkpoint(self) -> Path | None:
        """The model.pt of the session's run (there once an epoch ended)."""
        return self.job.request.out / CHECKPOINT_NAME if self.job is not None else None
