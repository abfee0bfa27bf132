"""The study viewer page: toolbar, the three views, the cursor read-out, study and label panels."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QButtonGroup,
    QComboBox,
    QFileDialog,
    QFrame,
    QHBoxLayout,
    QLabel,
    QScrollArea,
    QSizePolicy,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from app.models.window_level import PRESET_NAMES
from app.qt.theme import icon
from app.qt.viewer.opener import StudyOpener
from app.qt.viewer.panels import OverlayPanel, StudyPanel
from app.qt.viewer.view_grid import ViewGrid
from app.qt.widgets.common import button, separator
from app.services.workbench import Workbench

STUDY_FILTER = ("Studies (*.nii *.nii.gz *.nrrd *.nhdr *.mha *.mhd *.dcm *.seg.nrrd);;"
                "DICOM files (*.dcm);;All files (*)")
LABEL_FILTER = "Label maps (*.nii *.nii.gz *.nrrd *.seg.nrrd *.mha *.mhd *.dcm);;All files (*)"
READOUT_HINT = ("Wheel: slices · Right-drag: window/level · Left-drag: pan · Ctrl+wheel: zoom · "
                "Click: crosshair · Double-click: reset")


class ViewerPage(QWidget):
    def __init__(self, workbench: Workbench, shell: QWidget | None = None) -> None:
        super().__init__()
        self.setObjectName("Page")
        self.setAttribute(Qt.WidgetAttribute.WA_StyledBackground, True)
        self.workbench = workbench
        self.model = workbench.viewer
        self.opener = StudyOpener(workbench, self)
        outer = QVBoxLayout(self)
        outer.setContentsMargins(0, 0, 0, 0)
        outer.setSpacing(0)
        outer.addWidget(self._toolbar())
        body = QHBoxLayout()
        body.setContentsMargins(12, 12, 12, 12)
        body.setSpacing(12)
        center = QVBoxLayout()
        center.setSpacing(0)
        self.grid = ViewGrid(self.model)
        center.addWidget(self.grid, 1)
        self.readout = QLabel(READOUT_HINT)
        self.readout.setObjectName("Readout")
        self.readout.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Fixed)
        self.grid.cursor_moved.connect(self._show_cursor)
        center.addWidget(self.readout)
        body.addLayout(center, 1)
        body.addWidget(self._side_panel())
        outer.addLayout(body, 1)
        self.opener.busy.connect(self._busy)
        self.model.study_changed.connect(self._study_changed)
        self._study_changed()

    def _toolbar(self) -> QFrame:
        bar = QFrame()
        bar.setObjectName("Toolbar")
        row = QHBoxLayout(bar)
        row.setContentsMargins(12, 8, 12, 8)
        row.setSpacing(8)
        self.open_file = button("Open file", "file")
        self.open_file.setToolTip("Open a NIfTI, NRRD, MetaImage or DICOM file")
        self.open_file.clicked.connect(self.choose_file)
        self.open_folder = button("Open folder", "folder")
        self.open_folder.setToolTip("Open a DICOM folder (you choose the series if it holds several)")
        self.open_folder.clicked.connect(self.choose_folder)
        self.open_labels = button("Labels", "layers")
        self.open_labels.setToolTip("Overlay a label map that shares the study's grid")
        self.open_labels.clicked.connect(self.choose_labels)
        for widget in (self.open_file, self.open_folder, self.open_labels):
            row.addWidget(widget)
        row.addWidget(separator())
        self.layout_buttons = QButtonGroup(self)
        segments = QHBoxLayout()
        segments.setSpacing(0)
        layouts = (("axial", "Axial"), ("coronal", "Coronal"), ("sagittal", "Sagittal"), ("three", "All"))
        for position, (name, caption) in enumerate(layouts):
            tool = QToolButton()
            tool.setText(caption)
            tool.setToolTip("Show all three views" if name == "three" else f"Show the {caption.lower()} view")
            tool.setCheckable(True)
            tool.setChecked(name == "three")
            tool.setObjectName(("SegmentFirst", "Segment", "Segment", "SegmentLast")[position])
            tool.clicked.connect(lambda _=False, name=name: self.grid.set_layout(name))
            self.layout_buttons.addButton(tool)
            segments.addWidget(tool)
        row.addLayout(segments)
        row.addWidget(separator())
        self.presets = QComboBox()
        self.presets.setToolTip("Window/level preset (or right-drag on an image)")
        self.presets.setMinimumWidth(170)
        self.presets.addItems(PRESET_NAMES)
        self.presets.setCurrentIndex(-1)
        self.presets.setPlaceholderText("Window preset…")
        self.presets.activated.connect(lambda index: self.model.apply_preset(self.presets.itemText(index)))
        row.addWidget(self.presets)
        self.reset = QToolButton()
        self.reset.setIcon(icon("reset"))
        self.reset.setToolTip("Reset zoom and pan")
        self.reset.clicked.connect(self._reset_views)
        row.addWidget(self.reset)
        row.addStretch(1)
        self.status = QLabel()
        row.addWidget(self.status)
        return bar

    def _side_panel(self) -> QScrollArea:
        panel = QWidget()
        column = QVBoxLayout(panel)
        column.setContentsMargins(0, 0, 0, 0)
        column.setSpacing(12)
        self.study_panel = StudyPanel(self.model)
        column.addWidget(self.study_panel, 3)
        self.overlay_panel = OverlayPanel(self.model)
        column.addWidget(self.overlay_panel, 2)
        scroll = QScrollArea()
        scroll.setWidget(panel)
        scroll.setWidgetResizable(True)
        scroll.setFixedWidth(310)
        scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        return scroll

    # -- actions -----------------------------------------------------------------------------
    def open_path(self, path: Path, labels: Path | None = None, modality: str | None = None) -> None:
        self.opener.open(path, labels, modality)

    def choose_file(self) -> None:
        chosen, _ = QFileDialog.getOpenFileName(self, "Open a study", self._start_folder(), STUDY_FILTER)
        if chosen:
            self.open_path(Path(chosen))

    def choose_folder(self) -> None:
        chosen = QFileDialog.getExistingDirectory(self, "Open a DICOM folder", self._start_folder())
        if chosen:
            self.open_path(Path(chosen))

    def choose_labels(self) -> None:
        chosen, _ = QFileDialog.getOpenFileName(self, "Open a label map", self._start_folder(), LABEL_FILTER)
        if chosen:
            self.opener.open_labels(Path(chosen))

    def _start_folder(self) -> str:
        recent = self.workbench.settings.recent_studies
        return str(Path(recent[0]).parent) if recent else str(Path.home())

    def _reset_views(self) -> None:
        for panel in self.grid.panels.values():
            panel.view.reset_view()

    def _busy(self, message: str) -> None:
        self.status.setText(message)
        for widget in (self.open_file, self.open_folder):
            widget.setEnabled(not message)
        self.open_labels.setEnabled(not message and self.model.has_study)

    def _study_changed(self) -> None:
        self.open_labels.setEnabled(self.model.has_study)
        self.presets.setEnabled(self.model.has_study)
        self.presets.setCurrentIndex(-1)

    def _show_cursor(self, info) -> None:
        self.readout.setText(info.describe() if info is not None else READOUT_HINT)
