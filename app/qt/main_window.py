"""The main window: a sidebar of pages and the page stack; pages are built when first shown, so
start-up pays only for the home page (matplotlib, SimpleITK and torch load later, if ever)."""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path

from PySide6.QtCore import QEventLoop, QSize, Qt, Signal
from PySide6.QtGui import QIcon
from PySide6.QtWidgets import (
    QApplication,
    QButtonGroup,
    QFrame,
    QHBoxLayout,
    QLabel,
    QMainWindow,
    QPushButton,
    QStackedWidget,
    QVBoxLayout,
    QWidget,
)

from app import __version__
from app.qt.dialogs import show_error
from app.qt.theme import ICONS, icon
from app.qt.worker import run_in_background
from app.services.demo import DemoWorkspace, prepare_demo_workspace
from app.services.workbench import Workbench


@dataclass(frozen=True)
class PageSpec:
    name: str
    title: str
    icon: str
    factory: str  # "module:Class", imported on first use


PAGES = (
    PageSpec("home", "Home", "home", "app.qt.pages.home:HomePage"),
    PageSpec("viewer", "Viewer", "viewer", "app.qt.pages.viewer:ViewerPage"),
    PageSpec("dataset", "Dataset", "dataset", "app.qt.pages.dataset:DatasetPage"),
    PageSpec("training", "Training", "training", "app.qt.pages.training:TrainingPage"),
    PageSpec("federation", "Federation", "federation", "app.qt.pages.federation:FederationPage"),
    PageSpec("server", "Server", "server", "app.qt.pages.server:ServerPage"),
    PageSpec("metrics", "Metrics", "metrics", "app.qt.pages.metrics:MetricsPage"),
    PageSpec("inference", "Inference", "inference", "app.qt.pages.inference:InferencePage"),
    PageSpec("settings", "Settings", "settings", "app.qt.pages.settings:SettingsPage"),
)
PAGE_NAMES = tuple(spec.name for spec in PAGES)


class MainWindow(QMainWindow):
    """Signals: first_painted() once the window has been drawn (start-up benchmarks wait for it)."""

    first_painted = Signal()

    def __init__(self, workbench: Workbench) -> None:
        super().__init__()
        self.workbench = workbench
        self.setWindowTitle("FedSeg Workbench")
        self.setWindowIcon(QIcon(str(ICONS / "logo.svg")))
        self.resize(1440, 900)
        self.pages: dict[str, QWidget] = {}
        self.demo: DemoWorkspace | None = None
        self._painted = False
        central = QWidget()
        row = QHBoxLayout(central)
        row.setContentsMargins(0, 0, 0, 0)
        row.setSpacing(0)
        row.addWidget(self._sidebar())
        self.stack = QStackedWidget()
        row.addWidget(self.stack, 1)
        self.setCentralWidget(central)
        self.status = QLabel()
        self.statusBar().addWidget(self.status, 1)
        self.statusBar().setSizeGripEnabled(False)
        self.navigate("home")
        if workbench.store.problem:
            self.show_status(workbench.store.problem)

    def _sidebar(self) -> QFrame:
        bar = QFrame()
        bar.setObjectName("Sidebar")
        bar.setFixedWidth(212)
        column = QVBoxLayout(bar)
        column.setContentsMargins(12, 16, 12, 12)
        column.setSpacing(4)
        brand = QHBoxLayout()
        brand.setSpacing(10)
        logo = QLabel()
        logo.setPixmap(QIcon(str(ICONS / "logo.svg")).pixmap(QSize(32, 32)))
        brand.addWidget(logo)
        names = QVBoxLayout()
        names.setSpacing(0)
        title = QLabel("FedSeg")
        title.setObjectName("Brand")
        names.addWidget(title)
        tag = QLabel("Workbench")
        tag.setObjectName("BrandTag")
        names.addWidget(tag)
        brand.addLayout(names, 1)
        column.addLayout(brand)
        column.addSpacing(18)
        self.nav = QButtonGroup(self)
        self.nav.setExclusive(True)
        self.nav_buttons: dict[str, QPushButton] = {}
        for spec in PAGES:
            entry = QPushButton(f"  {spec.title}")
            entry.setObjectName("NavButton")
            entry.setIcon(icon(spec.icon))
            entry.setIconSize(QSize(18, 18))
            entry.setCheckable(True)
            entry.setCursor(Qt.CursorShape.PointingHandCursor)
            entry.clicked.connect(lambda _=False, name=spec.name: self.navigate(name))
            self.nav.addButton(entry)
            self.nav_buttons[spec.name] = entry
            column.addWidget(entry)
            if spec.name == "inference":
                column.addStretch(1)
        footer = QLabel(f"Version {__version__}\nImages never leave this site.")
        footer.setObjectName("SidebarFooter")
        column.addSpacing(8)
        column.addWidget(footer)
        return bar

    # -- pages -------------------------------------------------------------------------------
    def page(self, name: str) -> QWidget:
        """The page called `name`, built on first use: a busy cursor and a status line meanwhile, since a
        first visit may load matplotlib or SimpleITK (a second or two on a slow computer)."""
        if name not in self.pages:
            spec = next(spec for spec in PAGES if spec.name == name)
            module_name, class_name = spec.factory.split(":")
            opening = f"Opening {spec.title}…"
            self.show_status(opening)
            QApplication.setOverrideCursor(Qt.CursorShape.WaitCursor)
            if self._painted:  # paint the cue (before the first paint the window is not up yet)
                QApplication.processEvents(QEventLoop.ProcessEventsFlag.ExcludeUserInputEvents)
            try:
                page_class = getattr(importlib.import_module(module_name), class_name)
                self.pages[name] = page_class(self.workbench, self)
            finally:
                QApplication.restoreOverrideCursor()
                if self.status.text() == opening:
                    self.show_status("")
            self.stack.addWidget(self.pages[name])
        return self.pages[name]

    def navigate(self, name: str) -> QWidget:
        self.nav_buttons[name].setChecked(True)  # the sidebar answers the click before the page is built
        page = self.page(name)
        self.stack.setCurrentWidget(page)
        return page

    @property
    def current_page(self) -> str:
        return next(name for name, page in self.pages.items() if page is self.stack.currentWidget())

    def show_status(self, text: str) -> None:
        self.status.setText(text)

    # -- shared actions ----------------------------------------------------------------------
    def open_study(self, path: Path, labels: Path | None = None, modality: str | None = None) -> None:
        """Open a study in the viewer and show it."""
        self.navigate("viewer").open_path(path, labels, modality)

    def open_demo(self) -> None:
        """Make the demo data if needed (seconds, off the GUI thread), then show the chest CT."""
        self.show_status("Preparing the demo workspace…")
        root = self.workbench.settings.workspace_dir
        run_in_background(
            self, lambda report: prepare_demo_workspace(root, report), self._demo_ready,
            lambda error: show_error(self, "Could not prepare the demo workspace", error),
            self.show_status,
        )

    def _demo_ready(self, demo: DemoWorkspace) -> None:
        self.demo = demo
        for folder in reversed(demo.sites.values()):  # the CT site last: first in the recent list
            self.workbench.settings.add_recent_dataset(folder)
        self.workbench.save()
        self.workbench.recent_changed.emit()
        self.show_status(f"Demo workspace ready in {demo.root}")
        self.open_study(demo.chest_ct, demo.chest_labels, modality="ct")

    def closeEvent(self, event) -> None:  # noqa: N802 - Qt's name
        """Pages with a confirm_close() may keep the window open (it returns False); then running jobs
        are asked to save and stop, and finish on their own after the window is gone."""
        if not all(page.confirm_close() for page in self.pages.values() if hasattr(page, "confirm_close")):
            event.ignore()
            return
        for page in self.pages.values():
            shutdown = getattr(page, "shutdown", None)
            if shutdown is not None:
                shutdown()
        super().closeEvent(event)

    def paintEvent(self, event) -> None:  # noqa: N802 - Qt's name
        super().paintEvent(event)
        if not self._painted:
            self._painted = True
            self.first_painted.emit()
