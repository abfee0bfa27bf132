"""A `fedseg` subcommand run as a child process: its output goes to a log file, its events to a file.

The process itself is federation.processes' ChildProcess, the one wrapper every child of FedSeg goes
through (its own session, so a Ctrl-C in the GUI's terminal does not reach it). Stopping interrupts it
(SIGINT), which `fedseg` commands treat as "finish this step, save, exit"; killing ends its whole
session and is the fallback.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from segmentation.events import EventTail

if TYPE_CHECKING:
    from federation.processes import ChildProcess

ERROR_PREFIX = "fedseg: error: "
EXIT_INTERRUPTED = 130  # app.cli's exit status after Ctrl-C (SIGINT): the command saved and stopped


class FedsegChild:
    """`python -m app.cli ARGS...` with its log at `log_path` and its events followed at `events_path`."""

    def __init__(self, arguments: Sequence[str], log_path: Path, events_path: Path) -> None:
        self.arguments = list(arguments)
        self.log_path = log_path
        self.events_path = events_path
        self.tail: EventTail | None = None
        self.stop_requested = False  # the user asked it to stop: however it then ends, it was not a failure
        self._child: ChildProcess | None = None

    @property
    def command(self) -> list[str]:
        return [sys.executable, "-m", "app.cli", *self.arguments]

    def start(self) -> None:
        """Start the child; events already in the file are not reported again."""
        from federation.processes import start_child  # Flower is not imported: only the process helpers

        self.tail = EventTail(self.events_path)
        environment = {**os.environ, "PYTHONUNBUFFERED": "1", "FLWR_TELEMETRY_ENABLED": "0"}
        self._child = start_child(f"fedseg {self.arguments[0]}", self.command, environment, self.log_path)

    def events(self) -> list[dict]:
        """Events written since the last call."""
        return self.tail.read() if self.tail is not None else []

    @property
    def running(self) -> bool:
        return self._child is not None and self._child.alive()

    @property
    def exit_code(self) -> int | None:
        return None if self._child is None else self._child.popen.poll()

    def request_stop(self) -> None:
        """Ask the child to stop cleanly (it saves its state first)."""
        if self.running:
            self.stop_requested = True
            self._child.interrupt()  # type: ignore[union-attr]

    def wait(self, timeout: float) -> int:
        """The exit status once the child has ended; subprocess.TimeoutExpired after `timeout` seconds."""
        if self._child is None:
            raise RuntimeError("the child was never started")
        return self._child.popen.wait(timeout)

    def kill(self, timeout: float = 5.0) -> None:
        """Stop the child now: interrupt it, then end its whole session after `timeout` seconds."""
        if not self.running:
            return
        self.request_stop()
        try:
            self.wait(timeout)
        except subprocess.TimeoutExpired:
            self._child.stop(grace=0)  # type: ignore[union-attr]

    def log_tail(self, lines: int = 30) -> str:
        """The last lines this child wrote, as a terminal shows them: a progress bar that redraws its line
        (carriage returns) is one line, its latest state."""
        text = self._child.log_text() if self._child is not None else ""
        screen = [next((part for part in reversed(line.split("\r")) if part), "")
                  for line in text.rstrip("\n").split("\n")]
        return "\n".join(screen[-lines:]) if text else ""

    def failure_message(self) -> str:
        """The child's own one-line error, or a sentence with its exit status and log."""
        errors = [line for line in self.log_tail(200).splitlines() if line.startswith(ERROR_PREFIX)]
        if errors:
            return errors[-1][len(ERROR_PREFIX):]
        return f"the process ended unexpectedly (exit status {self.exit_code}); its log is {self.log_path}"
