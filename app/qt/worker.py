"""Short work off the GUI thread (read a study, segment one): a function on Qt's thread pool whose
result, error and progress are delivered to callbacks on the GUI thread.

Delivery goes through QTimer.singleShot with the owner as context: Qt runs the callback in the
owner's (GUI) thread and drops it if the owner was deleted meanwhile, so a page closed while its
work runs never receives a late answer.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from PySide6.QtCore import QObject, QRunnable, QThreadPool, QTimer

Report = Callable[[Any], None]


class Task:
    """A background function's handle: `done` once its result or error was delivered."""

    def __init__(self) -> None:
        self.done = False


class _Runnable(QRunnable):
    def __init__(self, owner: QObject, function: Callable[[Report], Any], task: Task,
                 on_result: Callable[[Any], None], on_error: Callable[[BaseException], None],
                 on_progress: Callable[[Any], None] | None) -> None:
        super().__init__()
        self.owner, self.function, self.task = owner, function, task
        self.on_result, self.on_error, self.on_progress = on_result, on_error, on_progress

    def run(self) -> None:
        try:
            value = self.function(self._report)
        except BaseException as error:  # noqa: BLE001 - every failure goes back to the GUI as a dialog
            self._deliver(self.on_error, error, final=True)
        else:
            self._deliver(self.on_result, value, final=True)

    def _report(self, value: Any) -> None:
        if self.on_progress is not None:
            self._deliver(self.on_progress, value, final=False)

    def _deliver(self, callback: Callable[[Any], None], value: Any, final: bool) -> None:
        task = self.task

        def call() -> None:
            task.done = task.done or final
            callback(value)

        try:
            QTimer.singleShot(0, self.owner, call)
        except RuntimeError:  # the owner is gone: nobody waits for this answer any more
            pass


def run_in_background(
    owner: QObject,
    function: Callable[[Report], Any],
    on_result: Callable[[Any], None],
    on_error: Callable[[BaseException], None],
    on_progress: Callable[[Any], None] | None = None,
) -> Task:
    """Call function(report) on the thread pool; the callbacks run on the GUI thread while `owner` lives."""
    task = Task()
    QThreadPool.globalInstance().start(_Runnable(owner, function, task, on_result, on_error, on_progress))
    return task
