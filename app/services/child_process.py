"""A `fedseg` subcommand run as a child process: its output goes to a log file, its events to a file.

Stopping sends SIGINT, which `fedseg` commands treat as "finish this step, save, exit"; killing is
the fallback. The child runs in its own session so a Ctrl-C in the GUI's terminal does not reach it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from segmentation.events import EventTail

ERROR_PREFIX = "fedseg: error: "
EXIT_INTERRUPTED = 130  # app.cli's exit status after Ctrl-C (SIGINT): the command saved and stopped


def _hear_ctrl_c() -> None:
    """In the child before exec: SIGINT back to its default, so a GUI started with SIGINT ignored (a
    background job) can still stop its children the way it asks them to."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


class FedsegChild:
    """`python -m app.cli ARGS...` with its log at `log_path` and its events followed at `events_path`."""

    def __init__(self, arguments: Sequence[str], log_path: Path, events_path: Path) -> None:
        self.arguments = list(arguments)
        self.log_path = log_path
        self.events_path = events_path
        self.tail: EventTail | None = None
        self.stop_requested = False  # the user asked it to stop: however it then ends, it was not a failure
        self._process: subprocess.Popen | None = None

    @property
    def command(self) -> list[str]:
        return [sys.executable, "-m", "app.cli", *self.arguments]

    def start(self) -> None:
        """Start the child; events already in the file are not reported again."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self.tail = EventTail(self.events_path)
        environment = {**os.environ, "PYTHONUNBUFFERED": "1", "FLWR_TELEMETRY_ENABLED": "0"}
        with open(self.log_path, "ab") as log:
            self._process = subprocess.Popen(
                self.command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                env=environment, start_new_session=os.name == "posix",
                preexec_fn=_hear_ctrl_c if os.name == "posix" else None,
            )

    def events(self) -> list[dict]:
        """Events written since the last call."""
        return self.tail.read() if self.tail is not None else []

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    @property
    def exit_code(self) -> int | None:
        return None if self._process is None else self._process.poll()

    def request_stop(self) -> None:
        """Ask the child to stop cleanly (it saves its state first)."""
        if self.running:
            self.stop_requested = True
            if os.name == "posix":
                self._process.send_signal(signal.SIGINT)  # type: ignore[union-attr]
            else:
                self._process.terminate()  # type: ignore[union-attr]

    def kill(self, timeout: float = 5.0) -> None:
        """Stop the child now: SIGINT, then SIGKILL after `timeout` seconds."""
        if not self.running:
            return
        self.request_stop()
        try:
            self._process.wait(timeout)  # type: ignore[union-attr]
        except subprocess.TimeoutExpired:
            self._process.kill()  # type: ignore[union-attr]
            self._process.wait()  # type: ignore[union-attr]

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""
        return "\n".join(text.replace("\r", "\n").splitlines()[-lines:])

    def failure_message(self) -> str:
        """The child's own one-line error, or a sentence with its exit status and log."""
        errors = [line for line in self.log_tail(200).splitlines() if line.startswith(ERROR_PREFIX)]
        if errors:
            return errors[-1][len(ERROR_PREFIX):]
        return f"the process ended unexpectedly (exit status {self.exit_code}); its log is {self.log_path}"
