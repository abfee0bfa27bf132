"""Technical summaries of what a path holds (for `fedseg inspect` and the GUI's open dialog): a study
file, a DICOM-SEG, every series of a DICOM folder, or every case of a dataset folder.

Only geometry (size, spacing, storage orientation), modality, value range, label names and reader
warnings: never patient identity.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from segmentation.datalist import CaseEntry, load_dataset
from segmentation.errors import FedSegError, SeriesSelectionError, StudyReadError
from segmentation.geometry import orientation_code
from segmentation.io.dicom import SeriesInfo, is_segmentation_file, list_series, load_series, select_series
from segmentation.io.formats import DICOM, DICOM_FOLDER, detect_format
from segmentation.io.readers import read_label_map, read_labeled_pair, read_volume
from segmentation.volume import Volume, normalize_modality

DICOM_SEG = "DICOM-SEG"


@dataclass(frozen=True)
class VolumeSummary:
    """One file or DICOM series: `size` and `spacing` are (x, y, z); `error` is set if unreadable."""

    source: str
    format: str
    modality: str
    size: tuple[int, int, int] | None = None
    spacing: tuple[float, float, float] | None = None
    orientation: str | None = None  # where the stored axes point ("LPS", "PIR", ...) or "oblique"
    dtype: str | None = None
    value_range: tuple[float, float] | None = None
    labels: dict[int, str] = field(default_factory=dict)
    warnings: tuple[str, ...] = ()
    series_uid: str | None = None
    description: str | None = None
    num_slices: int | None = None
    error: str | None = None

    def to_dict(self) -> dict:
        """JSON-ready form (label keys become strings)."""
        data = asdict(self)
        data["labels"] = {str(value): name for value, name in self.labels.items()}
        return data


def summarize(path: str | os.PathLike, series_uid: str | None = None) -> tuple[str, list[VolumeSummary]]:
    """The format of `path` and a summary per volume in it (every series of a DICOM folder).

    Each series is decoded to prove it is readable; irregular slice spacing is accepted and reported
    as a warning. A series that cannot be read gets a summary with `error` instead of failing all.
    """
    path = Path(path)
    fmt = detect_format(path)
    if fmt is DICOM and is_segmentation_file(path):
        if series_uid is not None:
            raise SeriesSelectionError(f"{path} is a {DICOM_SEG} file, not a DICOM folder: it has no series "
                                       "to choose")
        return DICOM_SEG, [_from_volume(read_label_map(path), str(path), DICOM_SEG)]
    if fmt not in (DICOM, DICOM_FOLDER):
        return fmt.name, [_from_volume(read_volume(path, series_uid), str(path), fmt.name)]
    series = list_series(path)
    if series_uid is not None:
        series = [select_series(series, series_uid, path)]
    return fmt.name, [_summarize_series(info) for info in series]


@dataclass(frozen=True)
class CaseSummary:
    """One case of a dataset folder, read as training reads it; `error` says why it cannot be used."""

    case_id: str
    split: str
    image: VolumeSummary
    label: VolumeSummary | None = None
    error: str | None = None

    def to_dict(self) -> dict:
        """JSON-ready form."""
        return {"case_id": self.case_id, "split": self.split, "image": self.image.to_dict(),
                "label": self.label.to_dict() if self.label else None, "error": self.error}


@dataclass(frozen=True)
class DatasetSummary:
    """A dataset folder's name, modality tag, label names and a summary per case."""

    root: str
    name: str
    modality: str
    labels: dict[int, str]
    cases: tuple[CaseSummary, ...]

    def to_dict(self) -> dict:
        """JSON-ready form (label keys become strings)."""
        return {"root": self.root, "name": self.name, "modality": self.modality,
                "labels": {str(value): name for value, name in self.labels.items()},
                "cases": [case.to_dict() for case in self.cases]}


def summarize_dataset(root: str | os.PathLike) -> DatasetSummary:
    """Read every case of root/dataset.json (DICOM series and DICOM-SEG labels included) as training and
    evaluation read it; a case that cannot be read, or holds labels the dataset does not name, gets an
    `error` instead of failing all."""
    index = load_dataset(root)
    splits = [("training", case) for case in index.training] + [("test", case) for case in index.test]
    cases = tuple(_summarize_case(case, split, index.root, index.labels) for split, case in splits)
    return DatasetSummary(str(index.root), index.name, index.modality, index.labels, cases)


def _summarize_case(case: CaseEntry, split: str, root: Path, names: dict[int, str]) -> CaseSummary:
    image_source, series = _relative(case.image, root), {"series_uid": case.series_uid}
    try:
        image_format = _format_name(case.image)
        if case.label is None:
            image = read_volume(case.image, case.series_uid)
            return CaseSummary(case.case_id, split, _from_volume(image, image_source, image_format, **series))
        image, label = read_labeled_pair(case.image, case.label, series_uid=case.series_uid)
        label_summary = _from_volume(label, _relative(case.label, root), _format_name(case.label))
    except FedSegError as error:
        unread = VolumeSummary(image_source, "-", case.modality, error=str(error), **series)
        return CaseSummary(case.case_id, split, unread, error=str(error))
    unknown = sorted({int(value) for value in np.unique(label.array)} - set(names))
    error = f"label values {unknown} are not in the dataset's labels" if unknown else None
    return CaseSummary(case.case_id, split, _from_volume(image, image_source, image_format, **series),
                       label_summary, error)


def _format_name(path: Path) -> str:
    """The name of a file's format, a DICOM-SEG named as such."""
    fmt = detect_format(path)
    return DICOM_SEG if fmt is DICOM and is_segmentation_file(path) else fmt.name


def _relative(path: Path, root: Path) -> str:
    return path.relative_to(root).as_posix() if path.is_relative_to(root) else str(path)


def _summarize_series(info: SeriesInfo) -> VolumeSummary:
    details = {"series_uid": info.uid, "description": info.description, "num_slices": info.num_slices}
    try:
        volume = load_series(info, allow_irregular=True).volume
    except StudyReadError as error:
        modality = normalize_modality(info.modality)
        return VolumeSummary(info.uid, "DICOM", modality, error=str(error), **details)
    return _from_volume(volume, info.uid, "DICOM", **details)


def _from_volume(volume: Volume, source: str, format_name: str, **details) -> VolumeSummary:
    array = volume.array
    value_range = (float(np.min(array)), float(np.max(array))) if array.size else None
    return VolumeSummary(
        source=source,
        format=format_name,
        modality=volume.modality,
        size=tuple(reversed(volume.shape)),
        spacing=tuple(float(v) for v in volume.spacing),
        orientation=orientation_code(volume.direction),
        dtype=str(array.dtype),
        value_range=value_range,
        labels=dict(volume.labels),
        warnings=volume.warnings,
        **details,
    )
