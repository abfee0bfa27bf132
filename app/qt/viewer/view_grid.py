"""The three orthogonal views with their slice sliders, shown one at a time or all together."""

from __future__ import annotations

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import QGridLayout, QHBoxLayout, QLabel, QSlider, QVBoxLayout, QWidget

from app.models.orientation import ViewAxis
from app.models.viewer import ViewerModel
from app.qt.viewer.slice_view import SliceView

LAYOUTS = ("axial", "coronal", "sagittal", "three")


class ViewPanel(QWidget):
    """A slice view with a slider under it (slider and wheel both move the model's position)."""

    def __init__(self, model: ViewerModel, axis: ViewAxis) -> None:
        super().__init__()
        self.model, self.axis = model, axis
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(4)
        self.view = SliceView(model, axis)
        layout.addWidget(self.view, 1)
        row = QHBoxLayout()
        row.setContentsMargins(6, 0, 6, 2)
        self.slider = QSlider(Qt.Orientation.Horizontal)
        self.slider.setToolTip(f"{axis.title} slice")
        self.slider.valueChanged.connect(lambda value: model.set_slice(axis, value))
        row.addWidget(self.slider, 1)
        self.counter = QLabel()
        self.counter.setObjectName("Muted")
        self.counter.setMinimumWidth(64)
        self.counter.setAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        row.addWidget(self.counter)
        layout.addLayout(row)
        model.study_changed.connect(self.sync)
        model.position_changed.connect(self.sync)
        self.sync()

    def sync(self) -> None:
        count = self.model.slice_count(self.axis)
        index = self.model.slice_index(self.axis)
        self.slider.blockSignals(True)
        self.slider.setRange(0, max(count - 1, 0))
        self.slider.setValue(index)
        self.slider.blockSignals(False)
        self.slider.setEnabled(count > 1)
        self.counter.setText(f"{index + 1} / {count}" if count else "")


class ViewGrid(QWidget):
    """Signals: cursor_moved(CursorInfo | None) from whichever view the mouse is over."""

    cursor_moved = Signal(object)

    def __init__(self, model: ViewerModel) -> None:
        super().__init__()
        self.panels = {axis: ViewPanel(model, axis) for axis in ViewAxis}
        for panel in self.panels.values():
            panel.view.cursor_moved.connect(self.cursor_moved)
        self.grid = QGridLayout(self)
        self.grid.setContentsMargins(0, 0, 0, 0)
        self.grid.setSpacing(6)
        self.layout_name = ""
        self.set_layout("three")

    def view(self, axis: ViewAxis) -> SliceView:
        return self.panels[axis].view

    def set_layout(self, name: str) -> None:
        """'axial', 'coronal', 'sagittal' (one large view) or 'three' (axial large, the others beside)."""
        if name not in LAYOUTS:
            raise ValueError(f"unknown layout {name!r}")
        self.layout_name = name
        for panel in self.panels.values():
            self.grid.removeWidget(panel)
            panel.hide()
        for column in range(2):
            self.grid.setColumnStretch(column, 0)
        if name == "three":
            placement = {ViewAxis.AXIAL: (0, 0, 2, 1), ViewAxis.CORONAL: (0, 1, 1, 1),
                         ViewAxis.SAGITTAL: (1, 1, 1, 1)}
            self.grid.setColumnStretch(0, 3)
            self.grid.setColumnStretch(1, 2)
        else:
            placement = {ViewAxis[name.upper()]: (0, 0, 2, 2)}
        for axis, (row, column, rows, columns) in placement.items():
            panel = self.panels[axis]
            self.grid.addWidget(panel, row, column, rows, columns)
            panel.view.show_crosshair = name == "three"
            panel.show()
