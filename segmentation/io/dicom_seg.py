"""DICOM-SEG files as label maps: segment numbers become label values, segment labels their names.

Over an image, the label map lands exactly on the image's voxel grid and is never resampled: through
the source instances the SEG references when the image is its DICOM series, otherwise by position
(whole-voxel shifts, flips and swaps of axes only). A SEG that fits neither is a GeometryMismatchError.
A label map holds one label per voxel, so where segments overlap the highest segment number wins and
the Volume carries a warning.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

import highdicom as hd
import numpy as np
from pydicom import Dataset

from segmentation.errors import GeometryMismatchError, StudyReadError, first_line
from segmentation.volume import Volume

# What highdicom needs of every source image to build a SEG that references it (checked by name, so
# the viewer can say at once why a series cannot be exported as DICOM-SEG).
SOURCE_ATTRIBUTES = (
    "ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing", "SOPClassUID", "SOPInstanceUID",
    "SeriesInstanceUID", "StudyInstanceUID", "PatientID", "PatientName", "PatientBirthDate", "PatientSex",
    "StudyDate", "StudyTime", "StudyID", "AccessionNumber",
)
# Positions and spacings that differ by less than this (mm, or voxels for offsets) are the same.
GRID_TOLERANCE = 1e-3
# How highdicom says a SEG's content is unusable (a RuntimeError says how it cannot be indexed).
_CONTENT_ERRORS = (ValueError, TypeError, KeyError, AttributeError, IndexError)
T = TypeVar("T")


def dicom_seg_problem(datasets: Sequence[Dataset]) -> str | None:
    """Why a series with these slice headers cannot be the source of a DICOM-SEG, or None if it can."""
    if not datasets:
        return "cannot be exported as DICOM-SEG: it is not a DICOM series"
    if not all(dataset.get("FrameOfReferenceUID") for dataset in datasets):
        return "cannot be exported as DICOM-SEG: no Frame of Reference UID"
    missing = [keyword for keyword in SOURCE_ATTRIBUTES if not all(keyword in ds for ds in datasets)]
    if missing:
        return f"cannot be exported as DICOM-SEG: its slices lack {', '.join(missing)}"
    return None


def read_dicom_seg_labels(
    path: Path, onto: Volume | None = None, source_datasets: Sequence[Dataset] = ()
) -> Volume:
    """The label map of a DICOM-SEG, on the grid of its own frames or, given `onto`, on that image's grid.

    `source_datasets` are the image's slice headers in its slice order when it is a DICOM series; the
    SEG must then segment that series.
    """
    seg = _open(path)
    labels = {number: str(seg.get_segment_description(number).segment_label or f"segment {number}")
              for number in seg.segment_numbers}
    if onto is None:
        own, warnings = _own_volume(seg, path)
        own = own.ensure_handedness(hd.AxisHandedness.LEFT_HANDED, flip_axis=0)  # see _grid_of
        direction = own.direction[:, ::-1]  # its axes (slice, row, column) are our (z, y, x)
        return Volume(np.asarray(own.array), spacing=tuple(reversed(own.spacing)), origin=tuple(own.position),
                      direction=tuple((direction.ravel() + 0.0).tolist()), labels=labels, warnings=warnings)
    if source_datasets:
        array, warnings = _over_series(seg, path, onto, source_datasets)
    else:
        array, warnings = _over_grid(seg, path, onto)
    return Volume(array, spacing=onto.spacing, origin=onto.origin, direction=onto.direction, labels=labels,
                  warnings=warnings)


def _open(path: Path) -> hd.seg.Segmentation:
    try:
        return hd.seg.segread(path)
    except Exception as error:  # noqa: BLE001 - pydicom/highdicom raise many types on damaged files
        raise StudyReadError(f"{path} is not a readable DICOM-SEG: {first_line(error)}") from None


def _over_series(
    seg: hd.seg.Segmentation, path: Path, image: Volume, source: Sequence[Dataset]
) -> tuple[np.ndarray, tuple[str, ...]]:
    """Frame by frame through the source slices the SEG references; by position when it names none."""
    series_uid = str(source[0].get("SeriesInstanceUID", "(none)"))
    referenced = {(series, instance) for _, series, instance in seg.get_source_image_uids()}
    series = {series for series, _ in referenced}
    if series and series_uid not in series:
        raise GeometryMismatchError(f"{path} segments series {', '.join(sorted(series))}, not series "
                                    f"{series_uid} of the image")
    frame = source[0].get("FrameOfReferenceUID")
    if frame and seg.get("FrameOfReferenceUID") and seg.FrameOfReferenceUID != frame:
        raise GeometryMismatchError(f"{path} lies in frame of reference {seg.FrameOfReferenceUID}, not the "
                                    f"image's {frame}")
    instances = [str(dataset.get("SOPInstanceUID", "")) for dataset in source]
    absent = {instance for series, instance in referenced if series == series_uid} - set(instances)
    if absent:
        raise GeometryMismatchError(f"{path} segments {len(absent)} slice(s) of series {series_uid} that "
                                    "the image does not hold")
    try:
        array, warnings = _combined(path, lambda skip: seg.get_pixels_by_source_instance(
            instances, combine_segments=True, relabel=False, assert_missing_frames_are_empty=True,
            skip_overlap_checks=skip))
    except RuntimeError:  # no per-frame references, or they say the pixels moved: place it by position
        return _over_grid(seg, path, image)
    if array.shape != image.shape:
        raise GeometryMismatchError(f"{path} has {array.shape[1]} x {array.shape[2]} pixel frames, not the "
                                    f"image's {image.shape[1]} x {image.shape[2]}")
    return array, warnings


def _over_grid(seg: hd.seg.Segmentation, path: Path, image: Volume) -> tuple[np.ndarray, tuple[str, ...]]:
    """The SEG's own volume moved onto the image's grid by whole voxels, or a GeometryMismatchError."""
    own, warnings = _own_volume(seg, path)
    grid = _grid_of(image)
    if not _same_steps(own, grid):
        raise GeometryMismatchError(f"{path} is not on the image's voxel grid: its voxels measure "
                                    f"{_mm(own.spacing)} mm, the image's {_mm(grid.spacing)} mm")
    try:
        placed = own.match_geometry(grid, tol=GRID_TOLERANCE)
    except RuntimeError as error:
        message = f"{path} is not on the image's voxel grid ({first_line(error)})"
        raise GeometryMismatchError(message) from None
    if np.count_nonzero(placed.array) != np.count_nonzero(own.array):
        raise GeometryMismatchError(f"{path} segments voxels outside the image")
    return np.ascontiguousarray(placed.array), warnings


def _own_volume(seg: hd.seg.Segmentation, path: Path) -> tuple[hd.Volume, tuple[str, ...]]:
    try:
        return _combined(path, lambda skip: seg.get_volume(combine_segments=True, relabel=False,
                                                           skip_overlap_checks=skip))
    except RuntimeError as error:
        raise StudyReadError(f"{path}: its frames do not form one regular 3D volume ({first_line(error)})"
                             ) from None


def _combined(path: Path, read: Callable[[bool], T]) -> tuple[T, tuple[str, ...]]:
    """`read(skip_overlap_checks)` once with highdicom's overlap check, again without it if segments
    overlap (the highest number then wins); a SEG whose content is no label map is a StudyReadError."""
    try:
        try:
            return read(False), ()
        except RuntimeError as error:
            if "overlap" not in str(error):
                raise
        return read(True), (f"{path}: segments overlap; where they do, the highest segment number wins",)
    except _CONTENT_ERRORS as error:  # e.g. a FRACTIONAL SEG with partial values
        raise StudyReadError(f"{path} cannot be read as a label map: {first_line(error)}") from None


def _grid_of(image: Volume) -> hd.VolumeGeometry:
    """The image's grid in highdicom's terms, whose axes are our array's (z, y, x) ones. Our (x, y, z)
    axes are right-handed when highdicom's (z, y, x) ones are left-handed."""
    direction = np.asarray(image.direction, float).reshape(3, 3)
    return hd.VolumeGeometry.from_components(
        image.shape, spacing=tuple(reversed(image.spacing)), direction=direction[:, ::-1],
        position=image.origin, coordinate_system="PATIENT",
    )


def _same_steps(volume: hd.Volume, grid: hd.VolumeGeometry) -> bool:
    """Whether every axis of `grid` runs along an axis of `volume` with the same voxel spacing."""
    return all(
        any(abs(abs(float(u @ v)) - 1.0) < GRID_TOLERANCE and abs(s - t) < GRID_TOLERANCE
            for v, t in zip(volume.unit_vectors(), volume.spacing, strict=True))
        for u, s in zip(grid.unit_vectors(), grid.spacing, strict=True)
    )


def _mm(spacing: Sequence[float]) -> str:
    """highdicom's (z, y, x) spacing as the project writes it, in (x, y, z) order."""
    return " x ".join(f"{value:.4g}" for value in reversed(spacing))
