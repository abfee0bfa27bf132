"""Opening studies without blocking the window: list series and read on a worker thread, ask which
series when there are several, put the result in the viewer model, show errors as dialogs."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from PySide6.QtCore import QObject, Signal
from PySide6.QtWidgets import QWidget

from app.models.study import Study
from app.qt.dialogs import show_error
from app.qt.viewer.series_picker import SeriesPicker
from app.qt.worker import run_in_background
from app.services.studies import labels_beside, list_series_choices, load_label_map, load_study
from app.services.workbench import Workbench
from segmentation.errors import FedSegError

if TYPE_CHECKING:
    from segmentation.volume import Volume


@dataclass(frozen=True)
class _Loaded:
    study: Study
    labels: Volume | None
    label_source: str


class StudyOpener(QObject):
    """Signals: busy(str) while reading (empty when done), opened(Study) once shown."""

    busy = Signal(str)
    opened = Signal(object)

    def __init__(self, workbench: Workbench, parent_widget: QWidget) -> None:
        super().__init__(parent_widget)
        self.workbench = workbench
        self.parent_widget = parent_widget
        self.picker: SeriesPicker | None = None

    def open(self, path: Path, labels: Path | None = None, modality: str | None = None) -> None:
        """Open a file or DICOM folder; MSD images bring their label file along."""
        self.busy.emit(f"Reading {path.name}…")

        def work(_report) -> _Loaded | list:
            choices = list_series_choices(path)
            if len(choices) > 1:
                return choices
            return _read(path, None, labels, modality)

        run_in_background(self, work, lambda result: self._loaded(path, labels, modality, result),
                          lambda error: self._failed("Could not open the study", error))

    def open_series(self, path: Path, series_uid: str, modality: str | None = None) -> None:
        self.busy.emit("Reading the series…")
        run_in_background(self, lambda _report: _read(path, series_uid, None, modality),
                          lambda result: self._loaded(path, None, modality, result),
                          lambda error: self._failed("Could not open the series", error))

    def open_labels(self, path: Path) -> None:
        """Overlay a label map on the open study."""
        self.busy.emit(f"Reading {path.name}…")
        run_in_background(self, lambda _report: load_label_map(path),
                          lambda volume: self._show_labels(volume, path.name),
                          lambda error: self._failed("Could not open the labels", error))

    def _loaded(self, path: Path, labels: Path | None, modality: str | None, result: _Loaded | list) -> None:
        self.busy.emit("")
        if isinstance(result, list):
            self.picker = SeriesPicker(str(path), result, self.parent_widget)
            self.picker.accepted.connect(lambda: self.open_series(path, self.picker.chosen.uid, modality))
            self.picker.open()
            return
        self.workbench.viewer.set_study(result.study)
        self.workbench.remember_study(path)
        if result.labels is not None:
            self._show_labels(result.labels, result.label_source)
        self.opened.emit(result.study)

    def _show_labels(self, volume: Volume, source: str) -> None:
        self.busy.emit("")
        try:
            self.workbench.viewer.set_labels(volume, source)
        except FedSegError as error:
            show_error(self.parent_widget, "Could not show the labels", error)

    def _failed(self, title: str, error: BaseException) -> None:
        self.busy.emit("")
        show_error(self.parent_widget, title, error, "opening the study")


def _read(path: Path, series_uid: str | None, labels: Path | None, modality: str | None) -> _Loaded:
    study = load_study(path, series_uid)
    if modality:
        study = study.with_modality(modality)
    label_path = labels or labels_beside(path)
    label_volume = load_label_map(label_path) if label_path is not None else None
    return _Loaded(study, label_volume, label_path.name if label_path is not None else "")
