"""Home: open a study, a DICOM folder or the demo workspace; recent studies and datasets."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QSize, Qt
from PySide6.QtWidgets import QGridLayout, QHBoxLayout, QLabel, QListWidget, QListWidgetItem

from app.models.federation import Channel
from app.qt.theme import icon
from app.qt.widgets.common import Card, Page, button, hint
from app.services.workbench import Workbench

STEPS = (
    ("1", "Build the site's dataset", "Pair images with labels, tag the modality, check every file."),
    ("2", "Train locally", "Watch loss and per-label Dice live; stop and resume at any epoch."),
    ("3", "Join the federation", ""),  # what leaves the site: said from the current settings
)
JOIN_STEP = STEPS[2][1]


class HomePage(Page):
    def __init__(self, workbench: Workbench, shell) -> None:
        super().__init__("Welcome to FedSeg Workbench",
                         "Train one segmentation model across hospitals without moving images. "
                         "Open a study to look at it, or start with the demo workspace.")
        self.workbench, self.shell = workbench, shell
        actions = QHBoxLayout()
        actions.setSpacing(12)
        demo = self._action_card(
            "demo", "Demo workspace",
            "A real chest CT with its labels, and CT, MR T1 and MR T2 phantom sites to train and "
            "federate with.", "Open the demo", shell.open_demo, primary=True)
        study = self._action_card("file", "Open a study", "NIfTI, NRRD, MetaImage, a Slicer segmentation or "
                                  "a single DICOM file.", "Open file…", self._open_file)
        folder = self._action_card("folder", "Open a DICOM folder", "Every series in the folder is listed "
                                   "and you choose which one to open.", "Open folder…", self._open_folder)
        for card in (demo, study, folder):
            actions.addWidget(card, 1)
        self.content.addLayout(actions)
        lower = QGridLayout()
        lower.setSpacing(12)
        self.recent_studies = self._recent_list(self._open_recent_study)
        self.recent_datasets = self._recent_list(self._open_recent_dataset)
        studies = Card("Recent studies")
        studies.body.addWidget(self.recent_studies, 1)
        datasets = Card("Recent datasets")
        datasets.body.addWidget(self.recent_datasets, 1)
        lower.addWidget(studies, 0, 0)
        lower.addWidget(datasets, 0, 1)
        lower.addWidget(self._steps_card(), 0, 2)
        for column in range(3):
            lower.setColumnStretch(column, 1)
        self.content.addLayout(lower, 1)
        workbench.recent_changed.connect(self.refresh)
        self.refresh()

    def _action_card(self, icon_name: str, title: str, text: str, action: str, slot,
                     primary: bool = False) -> Card:
        card = Card()
        top = QHBoxLayout()
        glyph = QLabel()
        glyph.setPixmap(icon(icon_name).pixmap(QSize(26, 26)))
        top.addWidget(glyph)
        heading = QLabel(title)
        heading.setObjectName("CardTitle")
        top.addWidget(heading, 1)
        card.body.addLayout(top)
        card.body.addWidget(hint(text), 1)
        trigger = button(action, primary=primary)
        trigger.clicked.connect(slot)
        row = QHBoxLayout()
        row.addWidget(trigger)
        row.addStretch(1)
        card.body.addLayout(row)
        return card

    def _steps_card(self) -> Card:
        card = Card("How a site takes part")
        self.step_labels: dict[str, QLabel] = {}
        for number, title, text in STEPS:
            row = QHBoxLayout()
            row.setSpacing(10)
            badge = QLabel(number)
            badge.setObjectName("Badge")
            badge.setProperty("tone", "running")
            badge.setAlignment(Qt.AlignmentFlag.AlignCenter)
            badge.setFixedSize(24, 22)
            row.addWidget(badge, 0, Qt.AlignmentFlag.AlignTop)
            label = QLabel(f"<b>{title}</b><br><span style='color:#8d96a8'>{text}</span>")
            label.setWordWrap(True)
            row.addWidget(label, 1)
            self.step_labels[title] = label
            card.body.addLayout(row)
        card.body.addStretch(1)
        return card

    def _recent_list(self, slot) -> QListWidget:
        widget = QListWidget()
        widget.itemActivated.connect(lambda item: slot(Path(item.data(Qt.ItemDataRole.UserRole))))
        return widget

    def showEvent(self, event) -> None:  # noqa: N802 (Qt's name): the site's settings may have changed
        self.refresh()
        super().showEvent(event)

    def refresh(self) -> None:
        settings = self.workbench.settings
        site = settings.site  # a site joins without TLS only when unencrypted was chosen
        channel = Channel(tls=not site.unencrypted or bool(site.ca_certificate),
                          node_auth=bool(site.node_key), he=bool(site.he_context), dp=site.dp)
        self.step_labels[JOIN_STEP].setText(f"<b>{JOIN_STEP}</b><br><span style='color:#8d96a8'>"
                                            f"{channel.sentence()}</span>")
        for widget, paths, icon_name, empty in (
            (self.recent_studies, settings.recent_studies, "file", "Studies you open appear here."),
            (self.recent_datasets, settings.recent_datasets, "dataset", "Datasets you use appear here."),
        ):
            widget.clear()
            for text in paths:
                item = QListWidgetItem(icon(icon_name), Path(text).name or text)
                item.setToolTip(text)
                item.setData(Qt.ItemDataRole.UserRole, text)
                widget.addItem(item)
            if not paths:
                item = QListWidgetItem(empty)
                item.setFlags(Qt.ItemFlag.NoItemFlags)
                widget.addItem(item)

    def _open_file(self) -> None:
        self.shell.navigate("viewer").choose_file()

    def _open_folder(self) -> None:
        self.shell.navigate("viewer").choose_folder()

    def _open_recent_study(self, path: Path) -> None:
        self.shell.open_study(path)

    def _open_recent_dataset(self, path: Path) -> None:
        self.shell.navigate("dataset").open_dataset(path)
