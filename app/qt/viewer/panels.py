"""The viewer's side panels: the study (name, modality, metadata) and the label overlay legend."""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtGui import QColor, QIcon, QPixmap
from PySide6.QtWidgets import (
    QAbstractItemView,
    QCheckBox,
    QColorDialog,
    QFormLayout,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QSlider,
    QTableWidget,
    QTableWidgetItem,
    QWidget,
)

from app.models.colors import RGB
from app.models.study import MODALITY_CAPTIONS
from app.models.viewer import ViewerModel
from app.qt.widgets.common import Card, combo, hint


def swatch(rgb: RGB, size: int = 14) -> QIcon:
    pixmap = QPixmap(size, size)
    pixmap.fill(QColor(*rgb))
    return QIcon(pixmap)


def details_table(rows: int = 0) -> QTableWidget:
    """A read-only two-column (field, value) table without headers."""
    table = QTableWidget(rows, 2)
    table.horizontalHeader().hide()
    table.verticalHeader().hide()
    table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
    table.setSelectionMode(QAbstractItemView.SelectionMode.NoSelection)
    table.setShowGrid(False)
    table.setAlternatingRowColors(True)
    table.setWordWrap(True)
    table.horizontalHeader().setSectionResizeMode(0, QHeaderView.ResizeMode.ResizeToContents)
    table.horizontalHeader().setSectionResizeMode(1, QHeaderView.ResizeMode.Stretch)
    table.setFocusPolicy(Qt.FocusPolicy.NoFocus)
    return table


def fill_details(table: QTableWidget, rows: list[tuple[str, str]] | tuple[tuple[str, str], ...]) -> None:
    table.setRowCount(len(rows))
    for row, (name, value) in enumerate(rows):
        key = QTableWidgetItem(name)
        key.setForeground(QColor("#8d96a8"))
        table.setItem(row, 0, key)
        item = QTableWidgetItem(value)
        item.setToolTip(value)
        table.setItem(row, 1, item)
    table.resizeRowsToContents()


class StudyPanel(Card):
    """Name and modality of the open study, and its metadata (shown here only, never sent anywhere)."""

    def __init__(self, model: ViewerModel, parent: QWidget | None = None) -> None:
        super().__init__("Study", parent=parent)
        self.model = model
        self.name = QLabel("No study open")
        self.name.setWordWrap(True)
        self.body.addWidget(self.name)
        form = QFormLayout()
        form.setContentsMargins(0, 0, 0, 0)
        self.modality = combo(list(MODALITY_CAPTIONS.items()), "unknown")
        self.modality.setToolTip("The modality decides HU read-outs and how a model normalizes the image")
        self.modality.currentIndexChanged.connect(lambda _: model.set_modality(self.modality.currentData()))
        form.addRow("Modality", self.modality)
        self.body.addLayout(form)
        self.table = details_table()
        self.table.setMinimumHeight(180)
        self.body.addWidget(self.table, 1)
        self.body.addWidget(hint("Metadata is shown on this computer only; it never leaves the site."))
        model.study_changed.connect(self.refresh)
        self.refresh()

    def refresh(self) -> None:
        study = self.model.study
        self.setEnabled(study is not None)
        self.name.setText(study.name if study else "No study open")
        if study is not None:
            self.modality.blockSignals(True)
            self.modality.setCurrentIndex(max(self.modality.findData(study.modality), 0))
            self.modality.blockSignals(False)
        fill_details(self.table, study.details if study else ())


class OverlayPanel(Card):
    """Overlay switch, opacity, and the legend: a checkable, colour-coded row per label.

    Double-clicking a row changes its colour.
    """

    def __init__(self, model: ViewerModel, parent: QWidget | None = None) -> None:
        super().__init__("Labels", parent=parent)
        self.model = model
        self.source = hint("No labels loaded")
        self.body.addWidget(self.source)
        row = QHBoxLayout()
        self.visible = QCheckBox("Show overlay")
        self.visible.setChecked(True)
        self.visible.toggled.connect(model.set_overlay_visible)
        row.addWidget(self.visible)
        row.addStretch(1)
        self.opacity_text = QLabel()
        self.opacity_text.setObjectName("Muted")
        row.addWidget(self.opacity_text)
        self.body.addLayout(row)
        self.opacity = QSlider(Qt.Orientation.Horizontal)
        self.opacity.setRange(0, 100)
        self.opacity.setToolTip("Overlay opacity")
        self.opacity.valueChanged.connect(lambda value: model.set_opacity(value / 100))
        self.body.addWidget(self.opacity)
        self._names: list[tuple[int, str]] = []
        self.legend = QListWidget()
        self.legend.setMinimumHeight(120)
        self.legend.itemChanged.connect(self._item_changed)
        self.legend.itemDoubleClicked.connect(self._choose_color)
        self.body.addWidget(self.legend, 1)
        model.labels_changed.connect(self.refresh)
        model.study_changed.connect(self.refresh)
        self.refresh()

    def refresh(self) -> None:
        model = self.model
        self.setEnabled(model.has_labels)
        self.source.setText(f"From {model.label_source}" if model.has_labels else "No labels loaded")
        self.visible.blockSignals(True)
        self.visible.setChecked(model.overlay_visible)
        self.visible.blockSignals(False)
        self.opacity.blockSignals(True)
        self.opacity.setValue(round(model.opacity * 100))
        self.opacity.blockSignals(False)
        self.opacity_text.setText(f"{model.opacity * 100:.0f} %")
        self.legend.blockSignals(True)
        names = [(layer.value, layer.name) for layer in model.layers.values()]
        if names != self._names:  # rebuild only for new labels: items may be mid-signal otherwise
            self._names = names
            self.legend.clear()
            for layer in model.layers.values():
                item = QListWidgetItem(layer.name)
                item.setData(Qt.ItemDataRole.UserRole, layer.value)
                item.setFlags(item.flags() | Qt.ItemFlag.ItemIsUserCheckable)
                item.setToolTip(f"Label {layer.value}: double-click to change its colour")
                self.legend.addItem(item)
        for row, layer in enumerate(model.layers.values()):
            item = self.legend.item(row)
            item.setIcon(swatch(layer.color))
            item.setCheckState(Qt.CheckState.Checked if layer.visible else Qt.CheckState.Unchecked)
        self.legend.blockSignals(False)

    def _item_changed(self, item: QListWidgetItem) -> None:
        value = item.data(Qt.ItemDataRole.UserRole)
        self.model.set_layer(value, visible=item.checkState() == Qt.CheckState.Checked)

    def _choose_color(self, item: QListWidgetItem) -> None:
        value = item.data(Qt.ItemDataRole.UserRole)
        chosen = QColorDialog.getColor(QColor(*self.model.layers[value].color), self, "Label colour")
        if chosen.isValid():
            self.model.set_layer(value, color=(chosen.red(), chosen.green(), chosen.blue()))
