"""The SuperLink's grid with replies pulled every half second instead of every 3 seconds.

Flower's Grid.send_and_receive sleeps 3 s between pulls, so a round that ends just after a pull waits up
to 3 s more, every round: with short rounds that is a large share of the run (bench/federation_round.py).
A pull is one small request to the SuperLink next to the ServerApp, so pulling more often costs little.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

from flwr.app import Message
from flwr.serverapp import Grid

REPLY_POLL_SECONDS = 0.5


class PromptGrid:
    """A Grid whose send_and_receive pulls replies every `poll_seconds`; everything else is the grid's."""

    def __init__(self, grid: Grid, poll_seconds: float = REPLY_POLL_SECONDS) -> None:
        self._grid = grid
        self._poll_seconds = poll_seconds

    def __getattr__(self, name: str) -> Any:
        return getattr(self._grid, name)

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> list[Message]:
        """Push the messages, then pull replies until every message has one or `timeout` seconds passed
        (None: no limit), as Flower's own send_and_receive does."""
        waiting = {message_id for message_id in self._grid.push_messages(messages) if message_id}
        deadline = None if timeout is None else time.monotonic() + timeout
        replies: list[Message] = []
        while waiting:
            pulled = list(self._grid.pull_messages(waiting))
            replies.extend(pulled)
            waiting -= {reply.metadata.reply_to_message_id for reply in pulled}
            if not waiting or (deadline is not None and time.monotonic() >= deadline):
                break
            time.sleep(self._poll_seconds)
        return replies
