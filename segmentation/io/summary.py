"""Technical summaries of what a path holds (for `fedseg inspect` and the GUI's open dialog).

Only geometry (size, spacing, storage orientation), modality, value range, label names and reader
warnings: never patient identity.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from segmentation.errors import StudyReadError
from segmentation.geometry import orientation_code
from segmentation.io.dicom import SeriesInfo, list_series, load_series, select_series
from segmentation.io.formats import DICOM, DICOM_FOLDER, detect_format
from segmentation.io.readers import read_volume
from segmentation.volume import Volume, normalize_modality


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
    if fmt not in (DICOM, DICOM_FOLDER):
        return fmt.name, [_from_volume(read_volume(path, series_uid), str(path), fmt.name)]
    series = list_series(path)
    if series_uid is not None:
        series = [select_series(series, series_uid, path)]
    return fmt.name, [_summarize_series(info) for info in series]


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
