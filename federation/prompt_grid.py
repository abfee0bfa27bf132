"""The SuperLink's grid, with the two changes that make a short round cheap.

- Replies are pulled every 0.1 s: Flower's Grid.send_and_receive sleeps 3 s between pulls, so a round
  that ends just after a pull waits up to 3 s more. A pull is one small request to the SuperLink next to
  the ServerApp, so pulling often costs little.
- Every message's arrays travel packed (federation.packed): two Flower objects instead of one per weight
  array. Sites answer packed messages packed, and replies are unpacked here, so the strategy sees the
  named arrays; a reply whose packing is broken stays as it came and fails validation.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any

from flwr.app import ArrayRecord, Message
from flwr.serverapp import Grid

from federation.packed import PackingError, pack, unpack

REPLY_POLL_SECONDS = 0.1


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
        messages = list(messages)
        for message in messages:
            _convert(message, pack)
        waiting = {message_id for message_id in self._grid.push_messages(messages) if message_id}
        deadline = None if timeout is None else time.monotonic() + timeout
        replies: list[Message] = []
        while waiting:
            pulled = list(self._grid.pull_messages(waiting))
            for reply in pulled:
                _convert(reply, unpack)
            replies.extend(pulled)
            waiting -= {reply.metadata.reply_to_message_id for reply in pulled}
            if not waiting or (deadline is not None and time.monotonic() >= deadline):
                break
            time.sleep(self._poll_seconds)
        return replies


def _convert(message: Message, convert: Callable[[ArrayRecord], ArrayRecord]) -> None:
    """Pack or unpack every ArrayRecord of a message with content, in place (a broken one stays)."""
    if not message.has_content():
        return
    for key, record in list(message.content.array_records.items()):
        try:
            message.content[key] = convert(record)
        except PackingError:
            pass
