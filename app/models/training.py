"""A training job's progress and curves, rebuilt from its events (segmentation.events' schema).

The same model follows `fedseg train` in a child process and any recorded events.jsonl: apply()
each event dict in order. The ETA comes only from this session's progress events (their own "time"
fields), so a resumed run does not count its earlier epochs as instant; it times steps and epoch ends
(validation and checkpoint) apart, since an epoch's end can cost as much as several steps.
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
class Pace:
    """This session's timing from its progress events: time over steps within an epoch, and time across
    an epoch's end (its validation and checkpoint, plus the steps on either side). The first step only
    starts the clock: it also holds the start-up."""

    step_seconds: float = 0.0
    steps: int = 0
    end_seconds: float = 0.0
    end_steps: int = 0
    ends: int = 0
    last: tuple[int, int, float] | None = None  # (epoch, steps done, time) of the latest progress event

    def add(self, epoch: int, done: int, time: float) -> None:
        if self.last is not None:
            last_epoch, last_done, last_time = self.last
            if epoch == last_epoch:
                self.step_seconds += time - last_time
                self.steps += done - last_done
            elif epoch == last_epoch + 1:
                self.end_seconds += time - last_time
                self.end_steps += done - last_done
                self.ends += 1
        self.last = (epoch, done, time)

    @property
    def first_estimate(self) -> bool:
        """No epoch's end timed yet: what is left is estimated from the steps alone."""
        return self.ends == 0

    def remaining(self, steps: int, ends: int) -> float | None:
        """Seconds for `steps` more steps and `ends` more epoch ends; None before two steps were timed."""
        if self.steps <= 0 and not self.ends:
            return None
        per_step = self.step_seconds / self.steps if self.steps > 0 else 0.0  # one-step epochs: none within
        per_end = max(self.end_seconds - self.end_steps * per_step, 0.0) / self.ends if self.ends else 0.0
        return steps * per_step + ends * per_end


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
        self.pace = Pace()

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
        self.step, self.pace = 0, Pace()
        if self.state is not JobState.STOPPING:
            self.state, self.message = JobState.RUNNING, ""

    def _on_progress(self, event: dict[str, Any]) -> None:
        self.epoch, self.epochs = int(event["epoch"]), int(event.get("epochs", self.epochs))
        self.step, self.steps = int(event["step"]), int(event["steps"])
        self.loss = _number(event.get("loss"))
        if self.loss is not None:
            self.curves.step_loss.append((self.epoch - 1 + self.step / max(self.steps, 1), self.loss))
        self.pace.add(self.epoch, self.steps_done, float(event.get("time", 0.0)))

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
        """Seconds left after the latest step: the steps left at this session's time per step, and the
        epoch ends left (the latest step's own included) at its time per epoch end; None until two steps
        were timed."""
        if self.pace.last is None or not self.total_steps:
            return None
        ends = max(self.epochs - self.pace.last[0] + 1, 0)
        return self.pace.remaining(max(self.total_steps - self.steps_done, 0), ends)

    @property
    def eta_text(self) -> str:
        """The ETA for people: '~0:45' while it is a first estimate (steps only), '0:40' once an epoch's
        end was timed, '—' while unknown."""
        eta = self.eta_seconds
        return ("~" if eta is not None and self.pace.first_estimate else "") + format_duration(eta)


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
