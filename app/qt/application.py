"""Start the workbench: QApplication, theme, main window, error dialogs for unexpected exceptions."""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path

import platformdirs
from PySide6.QtCore import QTimer
from PySide6.QtWidgets import QApplication

from app.qt.dialogs import show_error
from app.qt.main_window import MainWindow
from app.qt.theme import apply_theme
from app.services.settings import APP_NAME, SettingsStore
from app.services.workbench import Workbench


def create_application() -> QApplication:
    app = QApplication.instance() or QApplication([sys.argv[0] if sys.argv else "fedseg"])
    app.setApplicationName("FedSeg Workbench")
    app.setOrganizationName("FedSeg")
    apply_theme(app)
    return app


def install_error_dialogs(window: MainWindow) -> None:
    """Unexpected exceptions in Qt callbacks become a dialog (traceback to the log), not a crash."""

    def hook(kind, error, trace) -> None:
        if issubclass(kind, KeyboardInterrupt):
            QApplication.quit()
            return
        show_error(window, "Unexpected problem", error.with_traceback(trace), "working")

    sys.excepthook = hook


def run_gui(
    path: Path | None = None,
    labels: Path | None = None,
    demo: bool = False,
    page: str | None = None,
    settings_path: Path | None = None,
    quit_when_shown: bool = False,
) -> int:
    """Show the main window and run until it closes; the exit status of the event loop."""
    app = create_application()
    log_dir = platformdirs.user_log_path(APP_NAME)
    log_dir.mkdir(parents=True, exist_ok=True)
    logging.basicConfig(filename=log_dir / "gui.log", level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    window = MainWindow(Workbench(SettingsStore(settings_path)))
    install_error_dialogs(window)
    if quit_when_shown:
        def report() -> None:
            print(f"shown {time.time():.6f} {window.current_page}", flush=True)
            QTimer.singleShot(0, app.quit)

        window.first_painted.connect(report)
    window.show()
    if page:
        window.navigate(page)
    if path is not None:
        window.open_study(path, labels)
    elif demo:
        window.open_demo()
    return app.exec()
