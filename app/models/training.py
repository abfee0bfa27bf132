"""A training job's progress and curves, rebuilt from its events (segmentation.events' schema).

The same model follows `fedseg train` in a child process and any recorded events.jsonl: apply()
each event dict in order. ETA and rate come only from steps timed in the current session, so a
resumed run does not count its earlier epochs as instant.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from app.models.signals import Signal

DICE_PREFIX = "dice/"


class JobState(Enum):
    IDLE = "idle"
    STARTING = "starting"
    RUNNING = "running"
    STOPPING = "stopping"
    FINISHED = "finished"
    STOPPED = "stopped"
    FAILED = "failed"

    @property
    def active(self) -> bool:
        return self in (JobState.STARTING, JobState.RUNNING, JobState.STOPPING)


@dataclass
class Curves:
    """Loss per step (x in fractional epochs), loss and validation Dice per finished epoch."""

    step_loss: list[tuple[float, float]] = field(default_factory=list)
    epoch_loss: list[tuple[int, float]] = field(default_factory=list)
    mean_dice: list[tuple[int, float]] = field(default_factory=list)
    label_dice: dict[str, list[tuple[int, float]]] = field(default_factory=dict)


class TrainingRunModel:
    """Signals: changed() after every applied event or state change."""

    def __init__(self) -> None:
        self.changed = Signal()
        self.reset()

    def reset(self) -> None:
        self.state = JobState.IDLE
        self.message = ""
        self.epoch = self.epochs = self.step = self.steps = 0
        self.loss: float | None = None
        self.dice: float | None = None
        self.curves = Curves()
        self._timing: tuple[float, int] | None = None  # (time, steps done) of this session's first step
        self._latest: tuple[float, int] | None = None

    # -- state ---------------------------------------------------------------------------------
    def set_state(self, state: JobState, message: str = "") -> None:
        self.state, self.message = state, message
        self.changed.emit()

    def apply(self, event: dict[str, Any]) -> None:
        """Update from one event; unknown kinds and foreign fields are ignored."""
        if self._handle(event):
            self.changed.emit()

    def apply_all(self, events: list[dict[str, Any]]) -> None:
        """Update from several events with one changed() at the end (views redraw once per batch)."""
        handled = [self._handle(event) for event in events]
        if any(handled):
            self.changed.emit()

    def _handle(self, event: dict[str, Any]) -> bool:
        handler = getattr(self, f"_on_{str(event.get('kind')).replace('-', '_')}", None)
        if handler is not None:
            handler(event)
        return handler is not None

    def _on_started(self, event: dict[str, Any]) -> None:
        self.epochs = int(event.get("epochs", self.epochs))
        self.epoch = int(event.get("start_epoch", self.epoch))
        self.step, self._timing, self._latest = 0, None, None
        if self.state is not JobState.STOPPING:
            self.state, self.message = JobState.RUNNING, ""

    def _on_progress(self, event: dict[str, Any]) -> None:
        self.epoch, self.epochs = int(event["epoch"]), int(event.get("epochs", self.epochs))
        self.step, self.steps = int(event["step"]), int(event["steps"])
        self.loss = _number(event.get("loss"))
        if self.loss is not None:
            self.curves.step_loss.append((self.epoch - 1 + self.step / max(self.steps, 1), self.loss))
        sample = (float(event.get("time", 0.0)), self.steps_done)
        if self._timing is None:
            self._timing = sample
        self._latest = sample

    def _on_epoch(self, event: dict[str, Any]) -> None:
        epoch = int(event["epoch"])
        self.epoch, self.step = epoch, self.steps
        loss = _number(event.get("loss"))
        if loss is not None:
            self.curves.epoch_loss.append((epoch, loss))
        metrics = event.get("metrics") or {}
        dice = _number(metrics.get("dice"))
        if dice is not None:
            self.dice = dice
            self.curves.mean_dice.append((epoch, dice))
        for key, value in metrics.items():
            number = _number(value)
            if key.startswith(DICE_PREFIX) and number is not None:
                self.curves.label_dice.setdefault(key[len(DICE_PREFIX):], []).append((epoch, number))

    def _on_finished(self, event: dict[str, Any]) -> None:
        self.state, self.message = JobState.FINISHED, "training finished"

    def _on_stopped(self, event: dict[str, Any]) -> None:
        self.epoch = int(event.get("epoch", self.epoch))
        self.state, self.message = JobState.STOPPED, f"stopped after epoch {self.epoch}; resume to continue"

    def _on_error(self, event: dict[str, Any]) -> None:
        self.state, self.message = JobState.FAILED, str(event.get("message") or "training failed")

    # -- derived -------------------------------------------------------------------------------
    @property
    def steps_done(self) -> int:
        return max(self.epoch - 1, 0) * self.steps + self.step if self.steps else 0

    @property
    def total_steps(self) -> int:
        return self.epochs * self.steps

    @property
    def fraction(self) -> float:
        """Share of the run's steps done, 0..1 (epochs only, before the first step is known)."""
        if self.total_steps:
            return min(self.steps_done / self.total_steps, 1.0)
        return min(self.epoch / self.epochs, 1.0) if self.epochs else 0.0

    @property
    def eta_seconds(self) -> float | None:
        """Seconds left at this session's average step rate; None until two steps were timed."""
        if self._timing is None or self._latest is None or not self.total_steps:
            return None
        (start, done_start), (now, done_now) = self._timing, self._latest
        if done_now <= done_start or now <= start:
            return None
        per_step = (now - start) / (done_now - done_start)
        return max(self.total_steps - done_now, 0) * per_step


def format_duration(seconds: float | None) -> str:
    """'1:02:03', '4:05' or '—' when unknown."""
    if seconds is None:
        return "—"
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def _number(value: Any) -> float | None:
    """Finite floats only (events write NaN as null)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if value == value and abs(value) != float("inf") else None
