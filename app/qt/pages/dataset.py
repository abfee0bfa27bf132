"""Dataset (site admin): start a new dataset or open an MSD folder, add image/label pairs or DICOM
series, tag the modality, split into training and validation, check every file (problems are listed,
never fatal), save dataset.json. Nothing is lost: unsaved edits are asked about before they are
dropped, another dataset's dataset.json is replaced only when the user says so, and every replaced
file is kept beside the new one."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QSignalBlocker, Qt
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
from app.models.dataset import DEFAULT_NAME, VALIDATION, CaseRow, DatasetDraft
from app.models.study import MODALITY_CAPTIONS
from app.qt.dialogs import ask, show_error
from app.qt.theme import PALETTE
from app.qt.viewer.panels import swatch
from app.qt.viewer.series_picker import SeriesPicker
from app.qt.widgets.common import Card, MetricTile, Page, button, combo, hint
from app.qt.worker import run_in_background
from app.services.datasets import (
    check_case,
    open_study_case,
    pair_by_case,
    read_dataset_folder,
    replacing_needs_asking,
    save_dataset,
    series_row,
    start_folder,
)
from app.services.studies import SeriesChoice, list_series_choices
from app.services.workbench import Workbench
from segmentation.errors import FedSegError

SAVE, DISCARD, REPLACE = "Save", "Discard", "Replace"
IMAGE_FILTER = "Images (*.nii *.nii.gz *.nrrd *.nhdr *.mha *.mhd);;All files (*)"
LABEL_FILTER = ("Label maps (*.nii *.nii.gz *.nrrd *.seg.nrrd *.mha *.mhd *.dcm);;"
                "Slicer segmentations (*.seg.nrrd);;DICOM-SEG (*.dcm);;All files (*)")
COLUMNS = ("Case", "Split", "Image", "Label", "Size", "Spacing (mm)", "Check")
CHECK_COLUMN, NAME_COLUMN_WIDTH = len(COLUMNS) - 1, 110


class DatasetPage(Page):
    def __init__(self, workbench: Workbench, shell) -> None:
        super().__init__("Dataset", "This site's training data: image and label pairs in a Medical "
                         "Segmentation Decathlon style folder. Every file is read and checked; problems are "
                         "listed here.")
        self.workbench, self.shell = workbench, shell
        self.draft = DatasetDraft()
        self.picker: SeriesPicker | None = None
        toolbar = QHBoxLayout()
        self.new_button = button("New", "dataset")
        self.new_button.clicked.connect(self.new)
        self.open_button = button("Open…", "folder")
        self.open_button.setToolTip("Open a dataset folder (one that holds a dataset.json)")
        self.open_button.clicked.connect(self.choose_folder)
        self.save_button = button("Save", primary=True)
        self.save_button.setToolTip("Write dataset.json into the dataset's folder")
        self.save_button.clicked.connect(self.save)
        self.save_as_button = button("Save as…")
        self.save_as_button.setToolTip("Write dataset.json into another folder")
        self.save_as_button.clicked.connect(self.save_as)
        for widget in (self.new_button, self.open_button, self.save_button, self.save_as_button):
            toolbar.addWidget(widget)
        toolbar.addStretch(1)
        self.train_button = button("Train on this dataset", "training")
        self.train_button.clicked.connect(self.train)
        toolbar.addWidget(self.train_button)
        self.content.addLayout(toolbar)
        row = QHBoxLayout()
        row.setSpacing(12)
        row.addWidget(self._cases_card(), 1)
        side = QVBoxLayout()
        side.setSpacing(12)
        side.addWidget(self._settings_card())
        side.addWidget(self._statistics_card(), 1)
        row.addLayout(side)
        self.content.addLayout(row, 1)
        self.draft.changed.connect(self.refresh)
        workbench.viewer.study_changed.connect(self._study_changed)
        self.refresh()

    def _cases_card(self) -> Card:
        cases = Card("Cases")
        self.check_status = hint("")
        cases.header.addWidget(self.check_status, 1)
        adding = QHBoxLayout()
        self.add_button = button("Add images and labels…", "file")
        self.add_button.clicked.connect(self.choose_pairs)
        self.add_series_button = button("Add DICOM series…", "folder")
        self.add_series_button.clicked.connect(self.choose_series)
        self.add_study_button = button("Add the study open in the viewer", "viewer")
        self.add_study_button.clicked.connect(self.add_open_study)
        self.remove_button = button("Remove selected")
        self.remove_button.clicked.connect(self.remove_selected)
        for widget in (self.add_button, self.add_series_button, self.add_study_button, self.remove_button):
            adding.addWidget(widget)
        adding.addStretch(1)
        cases.body.addLayout(adding)
        self.table = QTableWidget(0, len(COLUMNS))
        self.table.setHorizontalHeaderLabels(COLUMNS)
        self.table.verticalHeader().hide()
        self.table.verticalHeader().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setAlternatingRowColors(True)
        self.table.setShowGrid(False)
        self.table.setWordWrap(True)  # a long problem wraps in the Check column instead of being cut off
        self.table.setTextElideMode(Qt.TextElideMode.ElideMiddle)
        header = self.table.horizontalHeader()
        for column in range(len(COLUMNS)):
            header.setSectionResizeMode(column, QHeaderView.ResizeMode.ResizeToContents)
        for column in (COLUMNS.index("Case"), COLUMNS.index("Image"), COLUMNS.index("Label")):
            header.setSectionResizeMode(column, QHeaderView.ResizeMode.Interactive)  # elided; tooltip in full
            header.resizeSection(column, NAME_COLUMN_WIDTH)
        header.setSectionResizeMode(CHECK_COLUMN, QHeaderView.ResizeMode.Stretch)
        cases.body.addWidget(self.table, 1)
        return cases

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
        self.folder = QLabel()
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

    # -- whole datasets ------------------------------------------------------------------------
    def new(self) -> None:
        if self.confirm_close():
            self.draft.reset()
            self._show_fields()

    def choose_folder(self) -> None:
        chosen = QFileDialog.getExistingDirectory(self, "Open a dataset folder", str(self._start()))
        if chosen:
            self.open_dataset(Path(chosen))

    def open_dataset(self, root: Path) -> None:
        """Read root/dataset.json (problems with the index itself are a dialog), then check every case;
        unsaved changes to the current draft are asked about first."""
        if not self.confirm_close():
            return
        try:
            name, modality, labels, rows = read_dataset_folder(root)
        except (FedSegError, OSError) as error:
            show_error(self, "Could not open the dataset", error)
            return
        self.draft.load(root, name, modality, labels, rows)
        self._show_fields()
        self.workbench.remember_dataset(root)
        self.check_all()

    def confirm_close(self) -> bool:
        """Whether the draft may be dropped: nothing unsaved, or the user saved or discarded it."""
        if not self.draft.has_unsaved_changes:
            return True
        answer = ask(self, "Unsaved changes", f"The dataset “{self.draft.name}” has changes that are not "
                     "saved. Save them first?", (SAVE, DISCARD))
        if answer == SAVE:
            return self.save()
        return answer == DISCARD

    def save(self) -> bool:
        """Save into the draft's own folder (a new draft asks for one); True when written."""
        if self.draft.root is None:
            return self.save_as()
        return self.save_to(self.draft.root)

    def save_as(self) -> bool:
        chosen = QFileDialog.getExistingDirectory(self, "Save the dataset in a folder", str(self._start()))
        return bool(chosen) and self.save_to(Path(chosen))

    def save_to(self, root: Path) -> bool:
        """Write root/dataset.json, asking first when it would replace another dataset's file."""
        if replacing_needs_asking(self.draft, root) and not self._replace_confirmed(root):
            return False
        try:
            saved = save_dataset(self.draft, root)
        except (FedSegError, OSError) as error:
            show_error(self, "Could not save the dataset", error, "saving the dataset")
            return False
        self.workbench.remember_dataset(root)
        self.shell.show_status(saved.describe())
        return True

    def _replace_confirmed(self, root: Path) -> bool:
        text = (f"{root} already holds the dataset.json of another dataset. Replace it? The old file is kept "
                "beside it under a new name.")
        return ask(self, "Replace dataset.json?", text, (REPLACE,)) == REPLACE

    # -- cases ---------------------------------------------------------------------------------
    def choose_pairs(self) -> None:
        images, _ = QFileDialog.getOpenFileNames(self, "Choose the images", str(self._start()), IMAGE_FILTER)
        if not images:
            return
        labels, _ = QFileDialog.getOpenFileNames(self, "Choose their label maps (matched by file name)",
                                                 str(Path(images[0]).parent), LABEL_FILTER)
        self.add_pairs(pair_by_case([Path(p) for p in images], [Path(p) for p in labels]))

    def add_pairs(self, pairs: list[tuple[Path, Path | None]]) -> None:
        self.draft.add_pairs(pairs)
        self.check_all()

    def choose_series(self) -> None:
        """A DICOM folder, then its label file (Cancel: none); a folder of several series asks which."""
        folder = QFileDialog.getExistingDirectory(self, "Choose a DICOM series folder", str(self._start()))
        if not folder:
            return
        label, _ = QFileDialog.getOpenFileName(self, "Choose its label map (Cancel: none yet)",
                                               str(Path(folder).parent), LABEL_FILTER)
        self.add_series(Path(folder), Path(label) if label else None)

    def add_open_study(self) -> None:
        """The viewer's study (and the label file its overlay came from) as a case."""
        try:
            image, label, series_uid = open_study_case(self.workbench.viewer)
        except FedSegError as error:
            show_error(self, "Could not add the study", error)
            return
        if image.is_dir():
            self.add_series(image, label, series_uid)
        else:
            self.draft.add_cases([CaseRow(image, label)])
            self.check_all()

    def add_series(self, folder: Path, label: Path | None, series_uid: str | None = None) -> None:
        """List the folder's series on a worker, ask which one when it holds several and none is given."""
        self.check_status.setText(f"Reading the series in {folder.name}…")

        def listed(choices: list[SeriesChoice]) -> None:
            if series_uid is None and len(choices) > 1:
                picker = self.picker = SeriesPicker(str(folder), choices, self)
                picker.accepted.connect(lambda: self._add_series_row(folder, choices, picker.chosen.uid,
                                                                     label))
                picker.open()
            else:
                self._add_series_row(folder, choices, series_uid, label)

        def failed(error: BaseException) -> None:
            self.check_status.setText("")
            show_error(self, "Could not read the series", error, "reading the series")

        run_in_background(self, lambda _report: list_series_choices(folder), listed, failed)

    def _add_series_row(self, folder: Path, choices: list[SeriesChoice], series_uid: str | None,
                        label: Path | None) -> None:
        self.check_status.setText("")
        try:
            row = series_row(folder, [choice.uid for choice in choices], series_uid, label)
        except FedSegError as error:
            show_error(self, "Could not add the series", error)
            return
        self.draft.add_cases([row])
        self.check_all()

    def remove_selected(self) -> None:
        self.draft.remove(sorted({index.row() for index in self.table.selectedIndexes()}))

    def check_all(self) -> None:
        """Read every unchecked pair on a worker; each result shows up as it comes."""
        todo = [(index, row) for index, row in enumerate(self.draft.rows) if row.check is None]
        labels = None if self.draft.adopts_labels else dict(self.draft.labels)
        if not todo:
            return
        self.check_status.setText(f"Checking {len(todo)} case(s)…")

        def work(report) -> int:
            for index, row in todo:
                report((index, row.key, check_case(row.image, row.label, labels, row.series_uid)))
            return len(todo)

        def done(count: int) -> None:
            self.check_status.setText(f"Checked {count} case(s)")

        run_in_background(self, work, done, lambda error: show_error(self, "Checking stopped", error),
                          self._checked)

    def _checked(self, result) -> None:
        index, key, check = result
        if index < len(self.draft.rows) and self.draft.rows[index].key == key:
            self.draft.set_check(index, check)

    def train(self) -> None:
        if self.draft.root is not None:
            self.shell.navigate("training").set_dataset(self.draft.root)

    def _modality_changed(self, _index: int) -> None:
        self.draft.set_modality(self.modality.currentData())

    def _name_changed(self, text: str) -> None:
        self.draft.set_name(text.strip() or DEFAULT_NAME)

    def _start(self) -> Path:
        settings = self.workbench.settings
        return start_folder(self.draft.root, settings.recent_datasets, settings.workspace_dir)

    # -- view ----------------------------------------------------------------------------------
    def _show_fields(self) -> None:
        """Put the draft's name and modality in their fields without counting that as an edit."""
        with QSignalBlocker(self.name), QSignalBlocker(self.modality):
            self.name.setText(self.draft.name)
            self.modality.setCurrentIndex(max(self.modality.findData(self.draft.modality), 0))

    def refresh(self) -> None:
        rows = self.draft.rows
        self.table.setRowCount(len(rows))
        for index, row in enumerate(rows):
            for column, item in enumerate(_cells(row, self.draft.check_text(row))):
                self.table.setItem(index, column, item)
        folder = str(self.draft.root) if self.draft.root else "not saved yet"
        self.folder.setText(f"{folder} (unsaved changes)" if self.draft.has_unsaved_changes else folder)
        stats = self.draft.statistics()
        self.tile_training.set(str(stats.training))
        self.tile_validation.set(str(stats.validation))
        self.tile_problems.set(str(stats.problems))
        self.tile_problems.value.setStyleSheet(f"color: {PALETTE['bad']};" if stats.problems else "")
        self.remove_button.setEnabled(bool(rows))
        self.save_button.setEnabled(bool(rows) and (self.draft.dirty or self.draft.root is None))
        self.save_as_button.setEnabled(bool(rows))
        self._study_changed()
        self.train_button.setEnabled(self.draft.root is not None and bool(rows))
        self._show_shares(stats.label_share)

    def _study_changed(self) -> None:
        self.add_study_button.setEnabled(self.workbench.viewer.has_study)

    def _show_shares(self, shares: dict[str, float]) -> None:
        while self.shares.count():
            item = self.shares.takeAt(0)
            if item.widget() is not None:
                item.widget().hide()  # at once: deleteLater waits for the event loop
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


def _cells(row: CaseRow, status: str) -> list[QTableWidgetItem]:
    from segmentation.datalist import case_id_of

    check = row.check
    size = " × ".join(map(str, check.size)) if check and check.size else ""
    spacing = " × ".join(f"{v:.3g}" for v in check.spacing) if check and check.spacing else ""
    image = f"{row.image.name} · series …{row.series_uid[-8:]}" if row.series_uid else row.image.name
    case = case_id_of(row.image)
    cells = [QTableWidgetItem(case), QTableWidgetItem(row.split),
             QTableWidgetItem(image), QTableWidgetItem(row.label.name if row.label else "—"),
             QTableWidgetItem(size), QTableWidgetItem(spacing), QTableWidgetItem(status)]
    cells[0].setToolTip(case)
    cells[2].setToolTip(f"{row.image}\nseries {row.series_uid}" if row.series_uid else str(row.image))
    cells[3].setToolTip(str(row.label) if row.label else "no label file")
    cells[CHECK_COLUMN].setToolTip(status)
    if row.split == VALIDATION:
        cells[1].setForeground(QColor(PALETTE["accent_text"]))
    if check is not None:
        tone = "bad" if not check.ok else ("good" if status == "OK" else "warn")
        cells[CHECK_COLUMN].setForeground(QColor(PALETTE[tone]))
        if not check.ok:
            cells[CHECK_COLUMN].setIcon(swatch((242, 104, 106), 8))
    return cells
