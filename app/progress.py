"""Terminal progress for any job, driven only by the project's events (see segmentation.events)."""

from __future__ import annotations

import sys
from typing import Any

from tqdm import tqdm


class EventProgressBar:
    """A tqdm bar over all steps of a job; call it with each event dict.

    Without a description the bar is labelled with the event's job, so one listener can follow
    several jobs in turn (a bar closes when its job finishes and the next job's first step opens one).
    """

    def __init__(self, description: str | None = None, file=sys.stderr) -> None:
        self.description = description
        self.file = file
        self._bar: tqdm | None = None

    def __call__(self, event: dict[str, Any]) -> None:
        kind = event["kind"]
        if kind == "progress":
            total = event["steps"] * event.get("epochs", 1)
            done = (event["epoch"] - 1) * event["steps"] + event["step"]
            if self._bar is None:
                # Steps done before the first timed one (a resumed job's earlier epochs, this first
                # step's warm-up) count as initial, so the rate and ETA reflect steady progress.
                self._bar = tqdm(total=total, initial=done, desc=self.description or event["job"],
                                 unit="step", file=self.file, dynamic_ncols=True)
            self._bar.update(max(0, done - self._bar.n))
            self._bar.set_postfix(epoch=event["epoch"], loss=f"{event['loss']:.4f}")
        elif kind == "epoch" and self._bar is not None:
            dice = event.get("metrics", {}).get("dice")
            if dice is not None:
                self._bar.write(f"epoch {event['epoch']}: loss {event['loss']:.4f}  dice {dice:.3f}")
        elif kind in ("finished", "stopped", "error"):
            self.close()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
