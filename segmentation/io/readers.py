"""Read any supported study file or DICOM folder into a Volume, label maps (DICOM-SEG included), and
image/label pairs that must align."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pydicom
import SimpleITK as sitk

from segmentation.errors import (
    GeometryMismatchError,
    NotFoundError,
    SeriesSelectionError,
    StudyReadError,
    UnsupportedFormatError,
)
from segmentation.io.dicom import is_segmentation_file, read_dicom_series
from segmentation.io.formats import (
    DICOM,
    DICOM_FOLDER,
    NIFTI,
    NRRD,
    SLICER_SEGMENTATION,
    FileFormat,
    detect_format,
)
from segmentation.io.nifti_integrity import check_nifti_complete
from segmentation.io.slicer import read_slicer_segmentation
from segmentation.volume import Volume


def read_volume(
    path: str | os.PathLike, series_uid: str | None = None, allow_irregular: bool = False
) -> Volume:
    """Read a NIfTI/NRRD/Slicer/MetaImage file, a DICOM file or one series of a DICOM folder.

    `series_uid` picks the series of a DICOM folder that holds several; `allow_irregular` accepts a
    DICOM series with missing or unevenly spaced slices (the Volume then carries a warning).
    """
    return _read_image(Path(path), series_uid, allow_irregular)[0]


def read_label_map(
    path: str | os.PathLike, onto: Volume | None = None, source_datasets: Sequence[pydicom.Dataset] = ()
) -> Volume:
    """Read a label map (NIfTI, NRRD, Slicer .seg.nrrd, MetaImage or DICOM-SEG) with integer values and
    a name for every label.

    A DICOM-SEG lands on the grid of the image `onto` (with `source_datasets`, that image's DICOM slice
    headers, it must segment that series); other files keep their own grid, which callers compare.
    """
    path = Path(path)
    if detect_format(path) is DICOM and is_segmentation_file(path):
        from segmentation.io.dicom_seg import read_dicom_seg_labels  # highdicom: only when a SEG is read

        return as_label_map(read_dicom_seg_labels(path, onto, source_datasets), path)
    return as_label_map(read_volume(path), path)


def read_labeled_pair(
    image_path: str | os.PathLike, label_path: str | os.PathLike, series_uid: str | None = None,
    allow_irregular: bool = False,
) -> tuple[Volume, Volume]:
    """Read an image and its label map, which must share size, spacing, origin and direction.

    `series_uid` and `allow_irregular` apply to the image (see read_volume); the label is any file
    read_label_map reads, a DICOM-SEG of the image's series included.
    """
    image, datasets = _read_image(Path(image_path), series_uid, allow_irregular)
    label = read_label_map(label_path, image, datasets)
    differences = image.geometry_differences(label)
    if differences:
        raise GeometryMismatchError(
            f"image {image_path} and label {label_path} do not line up: {'; '.join(differences)}"
        )
    return image, label


def as_label_map(volume: Volume, path: Path) -> Volume:
    """The volume with a non-negative integer array and a name for every label value."""
    array = volume.array
    if not np.issubdtype(array.dtype, np.integer):
        if not np.all(np.isfinite(array)) or np.any(array != np.round(array)):
            raise StudyReadError(f"{path} holds non-integer values, so it is not a label map")
    if array.size and array.min() < 0:
        raise StudyReadError(f"{path} holds negative values, so it is not a label map")
    top = int(array.max()) if array.size else 0
    dtype = next(t for t in (np.uint8, np.uint16, np.int32, np.int64) if top <= np.iinfo(t).max)
    present = [int(v) for v in np.unique(array) if v != 0]
    labels = volume.labels or {value: f"label {value}" for value in present}
    return volume.with_array(array.astype(dtype, copy=False), labels=labels)


def _read_image(
    path: Path, series_uid: str | None, allow_irregular: bool
) -> tuple[Volume, list[pydicom.Dataset]]:
    """The image and, for DICOM, its slice headers in the volume's slice order (empty otherwise)."""
    fmt = detect_format(path)
    if fmt in (DICOM, DICOM_FOLDER):
        series = read_dicom_series(path, series_uid, allow_irregular)
        return series.volume, series.datasets
    if series_uid is not None:
        raise SeriesSelectionError(f"{path} is a {fmt.name} file, not DICOM: it has no series to choose")
    if not os.access(path, os.R_OK):
        raise NotFoundError(f"{path} cannot be opened: permission denied")
    if fmt is SLICER_SEGMENTATION:
        return read_slicer_segmentation(path), []
    return _read_with_simpleitk(path, fmt), []


def read_header(path: Path, fmt: FileFormat) -> sitk.ImageFileReader:
    """A SimpleITK reader of `path` with its header read and no voxels (size, spacing, direction)."""
    reader = sitk.ImageFileReader()
    reader.SetImageIO(fmt.image_io)
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError:
        raise StudyReadError(f"{path} is not a readable {fmt.name} file") from None
    return reader


def _read_with_simpleitk(path: Path, fmt: FileFormat) -> Volume:
    reader = read_header(path, fmt)
    if fmt is NRRD and any(key.startswith("Segment0_") for key in reader.GetMetaDataKeys()):
        return read_slicer_segmentation(path)  # a Slicer segmentation saved without ".seg"
    dimension, components = reader.GetDimension(), reader.GetNumberOfComponents()
    if dimension not in (2, 3) or components != 1:
        raise UnsupportedFormatError(
            f"{path} is a {dimension}D image with {components} value(s) per voxel; the workbench reads "
            "single-channel 2D or 3D images"
        )
    if fmt is NIFTI:
        check_nifti_complete(path)
    try:
        image = reader.Execute()
    except RuntimeError:
        message = f"{path} is truncated or corrupt: its {fmt.name} header reads but its voxels do not"
        raise StudyReadError(message) from None
    return Volume.from_sitk(image)
