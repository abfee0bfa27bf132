"""Dataset (site admin): open an MSD folder or add image/label pairs, tag the modality, split into
training and validation, check every file (problems are listed, never fatal), save dataset.json."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import Qt
from PySide6.QtGui import QColor
from PySide6.QtWidgets import (
    QAbstractItemView,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QProgressBar,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from app.models.colors import hex_color, label_color
from app.models.dataset import VALIDATION, CaseRow, DatasetDraft
from app.models.study import MODALITY_CAPTIONS
from app.qt.dialogs import show_error
from app.qt.theme import PALETTE
from app.qt.viewer.panels import swatch
from app.qt.widgets.common import Card, MetricTile, Page, button, combo, hint
from app.qt.worker import run_in_background
from app.services.datasets import check_case, pair_by_case, read_dataset_folder, save_dataset
from app.services.workbench import Workbench
from segmentation.errors import FedSegError

IMAGE_FILTER = "Images (*.nii *.nii.gz *.nrrd *.nhdr *.mha *.mhd);;All files (*)"
COLUMNS = ("Case", "Split", "Image", "Label", "Size", "Spacing (mm)", "Check")


class DatasetPage(Page):
    def __init__(self, workbench: Workbench, shell) -> None:
        super().__init__("Dataset", "This site's training data: image and label pairs in a Medical "
                         "Segmentation Decathlon style folder. Every file is read and checked; problems are "
                         "listed here.")
        self.workbench, self.shell = workbench, shell
        self.draft = DatasetDraft()
        toolbar = QHBoxLayout()
        self.open_button = button("Open dataset folder…", "folder")
        self.open_button.clicked.connect(self.choose_folder)
        self.add_button = button("Add images and labels…", "file")
        self.add_button.clicked.connect(self.choose_pairs)
        self.remove_button = button("Remove selected")
        self.remove_button.clicked.connect(self.remove_selected)
        for widget in (self.open_button, self.add_button, self.remove_button):
            toolbar.addWidget(widget)
        toolbar.addStretch(1)
        self.train_button = button("Train on this dataset", "training")
        self.train_button.clicked.connect(self.train)
        toolbar.addWidget(self.train_button)
        self.save_button = button("Save dataset.json", primary=True)
        self.save_button.clicked.connect(self.save)
        toolbar.addWidget(self.save_button)
        self.content.addLayout(toolbar)
        row = QHBoxLayout()
        row.setSpacing(12)
        cases = Card("Cases")
        self.check_status = hint("")
        cases.header.addWidget(self.check_status, 1)
        self.table = QTableWidget(0, len(COLUMNS))
        self.table.setHorizontalHeaderLabels(COLUMNS)
        self.table.verticalHeader().hide()
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setAlternatingRowColors(True)
        self.table.setShowGrid(False)
        self.table.setWordWrap(False)
        header = self.table.horizontalHeader()
        for column in range(len(COLUMNS)):
            header.setSectionResizeMode(column, QHeaderView.ResizeMode.ResizeToContents)
        header.setSectionResizeMode(len(COLUMNS) - 1, QHeaderView.ResizeMode.Stretch)
        cases.body.addWidget(self.table, 1)
        row.addWidget(cases, 1)
        side = QVBoxLayout()
        side.setSpacing(12)
        side.addWidget(self._settings_card())
        side.addWidget(self._statistics_card(), 1)
        row.addLayout(side)
        self.content.addLayout(row, 1)
        self.draft.changed.connect(self.refresh)
        self.refresh()

    def _settings_card(self) -> Card:
        card = Card("Dataset")
        card.setFixedWidth(330)
        form = QFormLayout()
        form.setSpacing(10)
        self.name = QLineEdit(self.draft.name)
        self.name.textChanged.connect(self._name_changed)
        form.addRow("Name", self.name)
        tags = [(tag, caption) for tag, caption in MODALITY_CAPTIONS.items() if tag != "unknown"]
        self.modality = combo(tags)
        self.modality.currentIndexChanged.connect(self._modality_changed)
        form.addRow("Modality", self.modality)
        self.folder = QLabel("not saved yet")
        self.folder.setWordWrap(True)
        self.folder.setObjectName("Muted")
        form.addRow("Folder", self.folder)
        split = QHBoxLayout()
        self.share = QDoubleSpinBox()
        self.share.setRange(0, 90)
        self.share.setValue(20)
        self.share.setSuffix(" %")
        self.share.setDecimals(0)
        split.addWidget(self.share, 1)
        apply = button("Split")
        apply.clicked.connect(lambda: self.draft.split(self.share.value() / 100))
        split.addWidget(apply)
        form.addRow("Validation", split)
        card.body.addLayout(form)
        card.body.addWidget(hint("Validation cases score the model after every epoch and in every "
                                 "federated round; they are never trained on."))
        return card

    def _statistics_card(self) -> Card:
        card = Card("Statistics")
        card.setFixedWidth(330)
        tiles = QHBoxLayout()
        self.tile_training = MetricTile("training")
        self.tile_validation = MetricTile("validation")
        self.tile_problems = MetricTile("problems")
        for tile in (self.tile_training, self.tile_validation, self.tile_problems):
            tiles.addWidget(tile)
        card.body.addLayout(tiles)
        caption = QLabel("Labelled voxels per structure")
        caption.setObjectName("Muted")
        card.body.addWidget(caption)
        self.shares = QVBoxLayout()
        self.shares.setSpacing(6)
        card.body.addLayout(self.shares)
        card.body.addStretch(1)
        return card

    # -- actions -----------------------------------------------------------------------------
    def choose_folder(self) -> None:
        chosen = QFileDialog.getExistingDirectory(self, "Open a dataset folder", str(self._start()))
        if chosen:
            self.open_dataset(Path(chosen))

    def open_dataset(self, root: Path) -> None:
        """Read root/dataset.json (problems with the index itself are a dialog), then check every case."""
        try:
            name, modality, labels, rows = read_dataset_folder(root)
        except (FedSegError, OSError) as error:
            show_error(self, "Could not open the dataset", error)
            return
        self.draft.load(root, name, modality, labels, rows)
        self.name.setText(name)
        self.modality.setCurrentIndex(max(self.modality.findData(modality), 0))
        self.workbench.remember_dataset(root)
        self.check_all()

    def choose_pairs(self) -> None:
        images, _ = QFileDialog.getOpenFileNames(self, "Choose the images", str(self._start()), IMAGE_FILTER)
        if not images:
            return
        labels, _ = QFileDialog.getOpenFileNames(self, "Choose their label maps (matched by file name)",
                                                 str(Path(images[0]).parent), IMAGE_FILTER)
        self.add_pairs(pair_by_case([Path(p) for p in images], [Path(p) for p in labels]))

    def add_pairs(self, pairs: list[tuple[Path, Path | None]]) -> None:
        self.draft.add_pairs(pairs)
        self.check_all()

    def remove_selected(self) -> None:
        self.draft.remove(sorted({index.row() for index in self.table.selectedIndexes()}))

    def check_all(self) -> None:
        """Read every unchecked pair on a worker; each result shows up as it comes."""
        todo = [(index, row) for index, row in enumerate(self.draft.rows) if row.check is None]
        labels = dict(self.draft.labels)
        if not todo:
            return
        self.check_status.setText(f"Checking {len(todo)} case(s)…")

        def work(report) -> int:
            for index, row in todo:
                report((index, row.image, check_case(row.image, row.label, labels)))
            return len(todo)

        def done(count: int) -> None:
            self.check_status.setText(f"Checked {count} case(s)")

        run_in_background(self, work, done, lambda error: show_error(self, "Checking stopped", error),
                          self._checked)

    def _checked(self, result) -> None:
        index, image, check = result
        if index < len(self.draft.rows) and self.draft.rows[index].image == image:
            self.draft.set_check(index, check)

    def save(self) -> None:
        root = self.draft.root
        if root is None:
            chosen = QFileDialog.getExistingDirectory(self, "Save the dataset in a folder",
                                                      str(self._start()))
            if not chosen:
                return
            root = Path(chosen)
        self.save_to(root)

    def save_to(self, root: Path) -> None:
        try:
            written = save_dataset(self.draft, root)
        except (FedSegError, OSError) as error:
            show_error(self, "Could not save the dataset", error, "saving the dataset")
            return
        self.draft.root = root
        self.workbench.remember_dataset(root)
        self.shell.show_status(f"Wrote {written}")
        self.refresh()

    def train(self) -> None:
        if self.draft.root is not None:
            self.shell.navigate("training").set_dataset(self.draft.root)

    def _modality_changed(self, _index: int) -> None:
        self.draft.set_modality(self.modality.currentData())

    def _name_changed(self, text: str) -> None:
        self.draft.name = text.strip() or "site dataset"

    def _start(self) -> Path:
        return self.draft.root or self.workbench.settings.workspace_dir

    # -- view ----------------------------------------------------------------------------------
    def refresh(self) -> None:
        rows = self.draft.rows
        self.table.setRowCount(len(rows))
        for index, row in enumerate(rows):
            for column, item in enumerate(_cells(row)):
                self.table.setItem(index, column, item)
        self.folder.setText(str(self.draft.root) if self.draft.root else "not saved yet")
        stats = self.draft.statistics()
        self.tile_training.set(str(stats.training))
        self.tile_validation.set(str(stats.validation))
        self.tile_problems.set(str(stats.problems))
        self.tile_problems.value.setStyleSheet(f"color: {PALETTE['bad']};" if stats.problems else "")
        self.remove_button.setEnabled(bool(rows))
        self.save_button.setEnabled(bool(rows))
        self.train_button.setEnabled(self.draft.root is not None and bool(rows))
        self._show_shares(stats.label_share)

    def _show_shares(self, shares: dict[str, float]) -> None:
        while self.shares.count():
            item = self.shares.takeAt(0)
            if item.widget() is not None:
                item.widget().deleteLater()
        values = {name: value for value, name in self.draft.labels.items()}
        if not shares:
            self.shares.addWidget(hint("Shown once cases are checked."))
        for name, share in shares.items():
            line = QHBoxLayout()
            text = QLabel(name)
            text.setFixedWidth(110)
            line.addWidget(text)
            bar = QProgressBar()
            bar.setRange(0, 1000)
            bar.setValue(round(share * 1000))
            color = hex_color(label_color(values.get(name, 1)))
            bar.setStyleSheet(f"QProgressBar::chunk {{ background: {color}; border-radius: 5px; }}")
            line.addWidget(bar, 1)
            percent = QLabel(f"{share * 100:.1f} %")
            percent.setObjectName("Muted")
            percent.setFixedWidth(52)
            percent.setAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
            line.addWidget(percent)
            holder = QWidget()
            holder.setObjectName("Plain")
            holder.setLayout(line)
            holder.setMinimumHeight(22)
            self.shares.addWidget(holder)


def _cells(row: CaseRow) -> list[QTableWidgetItem]:
    from segmentation.datalist import case_id_of

    check = row.check
    size = " × ".join(map(str, check.size)) if check and check.size else ""
    spacing = " × ".join(f"{v:.3g}" for v in check.spacing) if check and check.spacing else ""
    status = "checking…" if check is None else ("OK" if check.ok else check.problem)
    cells = [QTableWidgetItem(case_id_of(row.image)), QTableWidgetItem(row.split),
             QTableWidgetItem(row.image.name), QTableWidgetItem(row.label.name if row.label else "—"),
             QTableWidgetItem(size), QTableWidgetItem(spacing), QTableWidgetItem(status)]
    cells[2].setToolTip(str(row.image))
    cells[3].setToolTip(str(row.label) if row.label else "no label file")
    cells[6].setToolTip(status)
    if row.split == VALIDATION:
        cells[1].setForeground(QColor(PALETTE["accent_text"]))
    if check is not None:
        cells[6].setForeground(QColor(PALETTE["good"] if check.ok else PALETTE["bad"]))
        if not check.ok:
            cells[6].setIcon(swatch((242, 104, 106), 8))
    return cells
