"""Short work off the GUI thread (read a study, segment one): a function on Qt's thread pool whose
result, error and progress come back to the GUI thread as signals."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from PySide6.QtCore import QObject, QRunnable, QThreadPool, Signal

Report = Callable[[Any], None]


class _Relay(QObject):
    result = Signal(object)
    error = Signal(object)
    progress = Signal(object)


class _Runnable(QRunnable):
    def __init__(self, function: Callable[[Report], Any], relay: _Relay) -> None:
        super().__init__()
        self.function, self.relay = function, relay

    def run(self) -> None:
        try:
            value = self.function(self.relay.progress.emit)
        except BaseException as error:  # noqa: BLE001 - every failure goes back to the GUI as a dialog
            self.relay.error.emit(error)
        else:
            self.relay.result.emit(value)


class Task:
    """A running background function; keep a reference until it reports (the owner usually does)."""

    def __init__(self, relay: _Relay) -> None:
        self.relay = relay
        self.done = False
        relay.result.connect(self._finish)
        relay.error.connect(self._finish)

    def _finish(self, _value: object) -> None:
        self.done = True


def run_in_background(
    function: Callable[[Report], Any],
    on_result: Callable[[Any], None],
    on_error: Callable[[BaseException], None],
    on_progress: Callable[[Any], None] | None = None,
) -> Task:
    """Call function(report) on the thread pool; the callbacks run on the GUI thread."""
    relay = _Relay()
    task = Task(relay)
    relay.result.connect(on_result)
    relay.error.connect(on_error)
    if on_progress is not None:
        relay.progress.connect(on_progress)
    QThreadPool.globalInstance().start(_Runnable(function, relay))
    return task
