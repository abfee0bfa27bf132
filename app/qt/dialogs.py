"""Errors as dialogs with one plain sentence (never a traceback on the user's screen), and questions with
named answers."""

from __future__ import annotations

import logging
import traceback

from PySide6.QtWidgets import QMessageBox, QWidget

from segmentation.errors import FedSegError, first_line

log = logging.getLogger("fedseg.gui")


def error_sentence(error: BaseException, action: str) -> str:
    """What to tell the user: the engine's own message, or a plain sentence naming the action."""
    if isinstance(error, FedSegError):
        text = str(error)
    elif isinstance(error, OSError) and error.strerror:
        where = f" ({error.filename})" if error.filename else ""
        text = f"{action} failed: {error.strerror.lower()}{where}"
    elif isinstance(error, MemoryError):
        text = f"{action} needs more memory than this computer has free"
    else:
        text = f"something unexpected went wrong while {action.lower()} ({first_line(error)})"
    text = text[:1].upper() + text[1:]
    return text if text.endswith((".", "?", "!")) else text + "."


def show_error(parent: QWidget | None, title: str, error: BaseException, action: str = "") -> QMessageBox:
    """A window-modal error box (non-blocking); the traceback goes to the log only."""
    log.error("%s: %s", title, "".join(traceback.format_exception(error)).strip())
    box = QMessageBox(QMessageBox.Icon.Warning, title, error_sentence(error, action or title), parent=parent)
    box.setObjectName("ErrorDialog")
    box.open()
    return box


def ask(parent: QWidget, title: str, text: str, choices: tuple[str, ...]) -> str | None:
    """A modal question with one button per choice and Cancel; the choice, None for Cancel or Escape."""
    box = QMessageBox(QMessageBox.Icon.Question, title, text, parent=parent)
    buttons = {box.addButton(choice, QMessageBox.ButtonRole.AcceptRole): choice for choice in choices}
    cancel = box.addButton(QMessageBox.StandardButton.Cancel)
    box.setDefaultButton(cancel)
    box.setEscapeButton(cancel)
    box.exec()
    return buttons.get(box.clickedButton())
