"""Open studies for the viewer: list a DICOM folder's series, read one, read a label map (a DICOM-SEG
included) over it.

Everything here may take seconds (decoding a series), so the GUI calls it on a worker thread; bad
input raises the engine's typed errors, which the GUI shows as a one-sentence dialog.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from app.models.orientation import orientation_code
from app.models.study import Study

if TYPE_CHECKING:
    import pydicom

    from segmentation.volume import Volume

# DICOM attributes the metadata panel shows (keyword, caption), when present.
DICOM_FIELDS = (
    ("Modality", "Modality"),
    ("SeriesDescription", "Series"),
    ("StudyDescription", "Study"),
    ("StudyDate", "Study date"),
    ("BodyPartExamined", "Body part"),
    ("Manufacturer", "Manufacturer"),
    ("ManufacturerModelName", "Model"),
    ("SliceThickness", "Slice thickness (mm)"),
    ("KVP", "kVp"),
    ("ConvolutionKernel", "Kernel"),
    ("MagneticFieldStrength", "Field strength (T)"),
    ("RepetitionTime", "TR (ms)"),
    ("EchoTime", "TE (ms)"),
)


@dataclass(frozen=True)
class SeriesChoice:
    """One series of a DICOM folder, as the series picker lists it."""

    uid: str
    description: str
    modality: str
    num_slices: int

    @property
    def title(self) -> str:
        return self.description or "(no description)"


def list_series_choices(path: Path) -> list[SeriesChoice]:
    """The image series of a DICOM folder or file; empty for any other format."""
    from segmentation.io.dicom import list_series
    from segmentation.io.formats import DICOM, DICOM_FOLDER, detect_format

    if detect_format(path) not in (DICOM, DICOM_FOLDER):
        return []
    return [SeriesChoice(info.uid, info.description, info.modality, info.num_slices)
            for info in list_series(path)]


def load_study(path: Path, series_uid: str | None = None, allow_irregular: bool = False) -> Study:
    """Read a study file or one series of a DICOM folder, with its metadata rows."""
    from segmentation.io import read_volume
    from segmentation.io.dicom import read_dicom_series
    from segmentation.io.dicom_seg import dicom_seg_problem
    from segmentation.io.formats import DICOM, DICOM_FOLDER, detect_format

    fmt = detect_format(path)
    if fmt in (DICOM, DICOM_FOLDER):
        series = read_dicom_series(path, series_uid, allow_irregular)
        problem = dicom_seg_problem(series.datasets)
        rows = _dicom_rows(series.datasets[0], series.info.uid) + volume_rows(series.volume, fmt.name)
        rows += [("Warning", problem)] if problem else []
        name = series.info.description or path.name
        return Study(series.volume, path, name, tuple(rows), series.info.uid, tuple(series.datasets), problem)
    volume = read_volume(path, series_uid, allow_irregular)
    return Study(volume, path, path.name, tuple(volume_rows(volume, fmt.name)))


def load_label_map(path: Path, study: Study | None = None) -> Volume:
    """A label map file (NIfTI, NRRD, Slicer .seg.nrrd, DICOM-SEG...) with integer values and label names.

    A DICOM-SEG lands on `study`'s grid, and over a DICOM study it must segment that very series.
    """
    from segmentation.io.readers import read_label_map

    if study is None:
        return read_label_map(path)
    return read_label_map(path, study.image, study.dicom_datasets)


def labels_beside(image: Path) -> Path | None:
    """The label file an MSD dataset keeps for an image (imagesTr/x.nii.gz -> labelsTr/x.nii.gz)."""
    folder = image.parent
    if folder.name.startswith("images"):
        candidate = folder.parent / ("labels" + folder.name[len("images"):]) / image.name
        if candidate.is_file():
            return candidate
    return None


def volume_rows(volume: Volume, format_name: str) -> list[tuple[str, str]]:
    """Technical rows every study has: format, size, spacing, orientation, value range, warnings."""
    array = volume.array
    rows = [
        ("Format", format_name),
        ("Size (x × y × z)", " × ".join(str(n) for n in reversed(volume.shape))),
        ("Spacing (mm)", " × ".join(f"{v:.3g}" for v in volume.spacing)),
        ("Origin (mm)", ", ".join(f"{v:.1f}" for v in volume.origin)),
        ("Orientation", orientation_code(volume.direction)),
        ("Data type", str(array.dtype)),
    ]
    if array.size:
        rows.append(("Value range", f"{np.min(array):.6g} … {np.max(array):.6g}"))
    rows.extend(("Warning", warning) for warning in volume.warnings)
    return rows


def _dicom_rows(dataset: pydicom.Dataset, series_uid: str) -> list[tuple[str, str]]:
    rows = []
    for keyword, caption in DICOM_FIELDS:
        value = dataset.get(keyword)
        if value not in (None, ""):
            rows.append((caption, _dicom_text(value)))
    rows.append(("Series UID", series_uid))
    return rows


def _dicom_text(value: object) -> str:
    """A DICOM value as one short line (multi-valued elements joined by ' / ')."""
    if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
        return " / ".join(str(item) for item in value)  # type: ignore[union-attr]
    return str(value)
