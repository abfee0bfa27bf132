"""Follow a growing events.jsonl: each call returns the complete events added since the last one."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


class EventTail:
    """New complete events of a JSON-lines file, from its current end (or its start).

    A half-written last line waits for the next call; a file that shrank (replaced by a new run)
    is read again from its start.
    """

    def __init__(self, path: Path, from_start: bool = False) -> None:
        self.path = path
        self.offset = 0 if from_start or not path.exists() else path.stat().st_size

    def read(self) -> list[dict[str, Any]]:
        try:
            with open(self.path, "rb") as stream:
                stream.seek(0, 2)
                if stream.tell() < self.offset:
                    self.offset = 0
                stream.seek(self.offset)
                data = stream.read()
        except FileNotFoundError:
            return []
        complete = data[: data.rfind(b"\n") + 1]
        self.offset += len(complete)
        events = []
        for line in complete.decode("utf-8", errors="replace").splitlines():
            try:
                event = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(event, dict):
                events.append(event)
        return events
