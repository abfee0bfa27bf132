"""This site's part in a federation, rebuilt from its `fedseg site` process: connection state, the
round in progress and one row per round (local loss, Dice of the global model before and after)."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Any

from app.models.signals import Signal


class SiteState(Enum):
    IDLE = "not joined"
    CONNECTING = "connecting"
    WAITING = "waiting for a round"
    TRAINING = "training"
    LEFT = "left"
    FAILED = "failed"

    @property
    def active(self) -> bool:
        return self in (SiteState.CONNECTING, SiteState.WAITING, SiteState.TRAINING)


@dataclass
class RoundRow:
    round: int
    loss: float | None = None
    dice_before: float | None = None  # the global model on this site's validation data, before training
    dice_after: float | None = None  # after this site's local training
    dice_global: float | None = None  # the round's new global model, evaluated here


class SiteRun:
    """Signals: changed()."""

    def __init__(self) -> None:
        self.changed = Signal()
        self.reset()

    def reset(self) -> None:
        self.state = SiteState.IDLE
        self.message = ""
        self.round = 0
        self.step = self.steps = self.epoch = self.epochs = 0
        self.rows: dict[int, RoundRow] = {}

    def set_state(self, state: SiteState, message: str = "") -> None:
        self.state, self.message = state, message
        self.changed.emit()

    def apply_all(self, events: list[dict[str, Any]]) -> None:
        for event in events:
            self._apply(event)
        if events:
            self.changed.emit()

    @property
    def fraction(self) -> float:
        """Progress of the round in progress: 0..1."""
        total = self.steps * max(self.epochs, 1)
        return min(((max(self.epoch - 1, 0)) * self.steps + self.step) / total, 1.0) if total else 0.0

    def _apply(self, event: dict[str, Any]) -> None:
        kind, number = event.get("kind"), event.get("round")
        if not isinstance(number, int):
            return
        row = self.rows.setdefault(number, RoundRow(number)) if kind != "site-metrics" else None
        metrics = event.get("metrics") if isinstance(event.get("metrics"), dict) else {}
        if kind == "started":
            self.round, self.step, self.epoch = number, 0, 0
            self.epochs = int(event.get("epochs") or 1)
            self.state, self.message = SiteState.TRAINING, f"training round {number}"
        elif kind == "progress":
            # The site's model counts epochs across rounds (epoch 3 of 4 is round 2's first of 2).
            total = int(event.get("epochs", 1))
            self.epochs = self.epochs or total
            self.epoch = int(event.get("epoch", 1)) - max(total - self.epochs, 0)
            self.step, self.steps = int(event.get("step", 0)), int(event.get("steps", 0))
        elif kind == "finished" and row is not None:
            row.loss = _number(metrics.get("train-loss"))
            row.dice_before = _number(metrics.get("before/dice"))
            row.dice_after = _number(metrics.get("after/dice"))
            self.step = self.steps
            self.state, self.message = SiteState.WAITING, f"round {number} sent; waiting for the next"
        elif kind == "evaluation" and event.get("phase") == "evaluate" and row is not None:
            row.dice_global = _number(metrics.get("dice"))
        elif kind == "error":
            self.message = f"round {number} failed here: {event.get('message', 'unknown error')}"


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None
