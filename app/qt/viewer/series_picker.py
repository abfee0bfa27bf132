"""The dialog that asks which series to open when a DICOM folder holds several."""

from __future__ import annotations

from PySide6.QtWidgets import (
    QAbstractItemView,
    QDialog,
    QDialogButtonBox,
    QHeaderView,
    QLabel,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from app.services.studies import SeriesChoice


class SeriesPicker(QDialog):
    """Lists the series (description, modality, slices, UID); `chosen` is the selected one."""

    def __init__(self, folder: str, choices: list[SeriesChoice], parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Choose a series")
        self.choices = choices
        self.resize(720, 360)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(16, 16, 16, 16)
        layout.setSpacing(12)
        caption = QLabel(f"{folder} holds {len(choices)} image series. Which one should open?")
        caption.setWordWrap(True)
        layout.addWidget(caption)
        self.table = QTableWidget(len(choices), 4)
        self.table.setHorizontalHeaderLabels(["Description", "Modality", "Slices", "Series UID"])
        self.table.verticalHeader().hide()
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.setAlternatingRowColors(True)
        self.table.setShowGrid(False)
        header = self.table.horizontalHeader()
        header.setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        header.setSectionResizeMode(3, QHeaderView.ResizeMode.Interactive)
        for row, choice in enumerate(choices):
            cells = (choice.title, choice.modality, str(choice.num_slices), choice.uid)
            for column, text in enumerate(cells):
                self.table.setItem(row, column, QTableWidgetItem(text))
        self.table.selectRow(0)
        self.table.doubleClicked.connect(self.accept)
        layout.addWidget(self.table, 1)
        standard = QDialogButtonBox.StandardButton
        buttons = QDialogButtonBox(standard.Open | standard.Cancel)
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        layout.addWidget(buttons)

    @property
    def chosen(self) -> SeriesChoice:
        return self.choices[max(self.table.currentRow(), 0)]
