"""Opening studies without blocking the window: list series and read on a worker thread, ask which
series when there are several, put the result in the viewer model, show errors as dialogs."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from PySide6.QtCore import QObject, Signal
from PySide6.QtWidgets import QMessageBox, QWidget

from app.models.study import Study
from app.qt.dialogs import show_error
from app.qt.viewer.series_picker import SeriesPicker
from app.qt.worker import run_in_background
from app.services.studies import labels_beside, list_series_choices, load_label_map, load_study
from app.services.workbench import Workbench
from segmentation.errors import FedSegError, SliceGeometryError

if TYPE_CHECKING:
    from segmentation.volume import Volume


@dataclass(frozen=True)
class _Loaded:
    study: Study
    labels: Volume | None
    label_path: Path | None


class StudyOpener(QObject):
    """Signals: busy(str) while reading (empty when done)."""

    busy = Signal(str)

    def __init__(self, workbench: Workbench, parent_widget: QWidget) -> None:
        super().__init__(parent_widget)
        self.workbench = workbench
        self.parent_widget = parent_widget
        self.picker: SeriesPicker | None = None
        self.question: QMessageBox | None = None

    def open(self, path: Path, labels: Path | None = None, modality: str | None = None) -> None:
        """Open a file or DICOM folder; MSD images bring their label file along."""
        self._start(_Request(path, labels=labels, modality=modality), f"Reading {path.name}…")

    def open_series(self, path: Path, series_uid: str, modality: str | None = None) -> None:
        self._start(_Request(path, series_uid, modality=modality), "Reading the series…")

    def _start(self, request: _Request, message: str) -> None:
        self.busy.emit(message)

        def work(_report) -> _Loaded | list:
            if request.series_uid is None and not request.allow_irregular:
                choices = list_series_choices(request.path)
                if len(choices) > 1:
                    return choices
            return _read(request)

        run_in_background(self, work, lambda result: self._loaded(request, result),
                          lambda error: self._failed(request, error))

    def open_labels(self, path: Path) -> None:
        """Overlay a label map (a DICOM-SEG of the open series included) on the open study."""
        study = self.workbench.viewer.study
        self.busy.emit(f"Reading {path.name}…")
        run_in_background(self, lambda _report: load_label_map(path, study),
                          lambda volume: self._show_labels(volume, path),
                          self._failed_labels)

    def _loaded(self, request: _Request, result: _Loaded | list) -> None:
        self.busy.emit("")
        if isinstance(result, list):
            self.picker = SeriesPicker(str(request.path), result, self.parent_widget)
            self.picker.accepted.connect(
                lambda: self.open_series(request.path, self.picker.chosen.uid, request.modality))
            self.picker.open()
            return
        self.workbench.viewer.set_study(result.study)
        self.workbench.remember_study(request.path)
        if result.labels is not None and result.label_path is not None:
            self._show_labels(result.labels, result.label_path)

    def _show_labels(self, volume: Volume, path: Path) -> None:
        self.busy.emit("")
        try:
            self.workbench.viewer.set_labels(volume, path.name, path)
        except FedSegError as error:
            show_error(self.parent_widget, "Could not show the labels", error)

    def _failed(self, request: _Request, error: BaseException) -> None:
        self.busy.emit("")
        if isinstance(error, SliceGeometryError) and not request.allow_irregular:
            self._offer_irregular(request, error)
        else:
            show_error(self.parent_widget, "Could not open the study", error, "opening the study")

    def _offer_irregular(self, request: _Request, error: SliceGeometryError) -> None:
        """Slices are missing or unevenly spaced: say so, and open it anyway if the user wants."""
        detail = str(error).split("; pass allow_irregular")[0]
        self.question = QMessageBox(
            QMessageBox.Icon.Question, "Irregular slices",
            f"{detail}. Open it anyway? Distances and volumes along the slices may be off.",
            QMessageBox.StandardButton.Open | QMessageBox.StandardButton.Cancel, self.parent_widget,
        )
        self.question.accepted.connect(lambda: self._start(replace(request, allow_irregular=True),
                                                           "Reading the series…"))
        self.question.open()

    def _failed_labels(self, error: BaseException) -> None:
        self.busy.emit("")
        show_error(self.parent_widget, "Could not open the labels", error, "opening the labels")


@dataclass(frozen=True)
class _Request:
    path: Path
    series_uid: str | None = None
    labels: Path | None = None
    modality: str | None = None
    allow_irregular: bool = False


def _read(request: _Request) -> _Loaded:
    study = load_study(request.path, request.series_uid, request.allow_irregular)
    if request.modality:
        study = study.with_modality(request.modality)
    path = request.path
    label_path = request.labels or labels_beside(path)
    label_volume = load_label_map(label_path, study) if label_path is not None else None
    return _Loaded(study, label_volume, label_path if label_volume is not None else None)
