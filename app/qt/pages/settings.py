"""Settings: the workspace folder, recent files, where settings live, and what stays on this site."""

from __future__ import annotations

import platform

from PySide6.QtWidgets import QFormLayout, QHBoxLayout, QLabel, QVBoxLayout

from app import __version__
from app.qt.theme import PALETTE
from app.qt.widgets.common import Card, Page, PathField, button, hint
from app.services.workbench import Workbench


class SettingsPage(Page):
    def __init__(self, workbench: Workbench, shell) -> None:
        super().__init__("Settings", "Saved as you change them, in a TOML file in your configuration "
                                     "folder; a file that cannot be read is kept under another name.")
        self.workbench, self.shell = workbench, shell
        row = QHBoxLayout()
        row.setSpacing(12)
        left = QVBoxLayout()
        left.setSpacing(12)
        workspace = Card("Workspace", "Demo data, training runs and exports go here unless you choose "
                                      "another folder.")
        self.workspace = PathField("folder", "Choose the workspace folder")
        self.workspace.set_path(workbench.settings.workspace_dir)
        self.workspace.changed.connect(self._workspace_changed)
        workspace.body.addWidget(self.workspace)
        left.addWidget(workspace)
        recent = Card("Recent files")
        self.recent_counts = hint("")
        recent.body.addWidget(self.recent_counts)
        clear = button("Clear recent files")
        clear.clicked.connect(self.clear_recent)
        line = QHBoxLayout()
        line.addWidget(clear)
        line.addStretch(1)
        recent.body.addLayout(line)
        left.addWidget(recent)
        left.addStretch(1)
        row.addLayout(left, 1)
        right = QVBoxLayout()
        right.setSpacing(12)
        about = Card("About")
        form = QFormLayout()
        form.setSpacing(8)
        for caption, value in (("Version", __version__), ("Python", platform.python_version()),
                               ("Settings file", str(workbench.store.path)),
                               ("Device", "CUDA GPU when available, else CPU (decided when a job starts)")):
            label = QLabel(value)
            label.setWordWrap(True)
            form.addRow(caption, label)
        about.body.addLayout(form)
        self.settings_problem = hint(workbench.store.problem)
        self.settings_problem.setStyleSheet(f"color: {PALETTE['warn']};")
        self.settings_problem.setVisible(bool(workbench.store.problem))
        about.body.addWidget(self.settings_problem)
        right.addWidget(about)
        privacy = Card("What leaves this site")
        privacy.body.addWidget(hint(
            "Images, labels and study metadata never leave this computer. Federated training sends only "
            "model updates (encrypted when the federation uses homomorphic encryption) and summary "
            "numbers such as Dice per round."))
        right.addWidget(privacy)
        right.addStretch(1)
        row.addLayout(right, 1)
        self.content.addLayout(row, 1)
        workbench.recent_changed.connect(self.refresh)
        self.refresh()

    def _workspace_changed(self, text: str) -> None:
        self.workbench.settings.workspace = text.strip()
        self.workbench.save()

    def clear_recent(self) -> None:
        self.workbench.settings.recent_studies.clear()
        self.workbench.settings.recent_datasets.clear()
        self.workbench.save()
        self.workbench.recent_changed.emit()

    def refresh(self) -> None:
        settings = self.workbench.settings
        self.recent_counts.setText(f"{len(settings.recent_studies)} recent studies and "
                                   f"{len(settings.recent_datasets)} recent datasets are remembered.")
