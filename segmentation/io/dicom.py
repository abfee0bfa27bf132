"""DICOM studies: find the image series in a folder (or one file) and load one into a Volume.

A folder with several series never loads "the first": the caller names one, otherwise a
SeriesSelectionError lists them. Slices are ordered along the slice normal and checked for gaps.
"""

from __future__ import annotations

import os
from collections import defaultdict
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pydicom
from pydicom.errors import InvalidDicomError
from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

from segmentation.errors import (
    EmptyFolderError,
    MissingPixelDataError,
    NotDicomError,
    NotFoundError,
    SeriesSelectionError,
    SliceGeometryError,
    UnsupportedFormatError,
)
from segmentation.io.dicom_geometry import orientation_matrix, slice_geometry
from segmentation.io.dicom_pixels import decode_pixels, drop_pixel_data, to_modality_values
from segmentation.volume import Volume

# DICOM objects that carry no image to segment, even when they hold pixel data (SEG masks).
NON_IMAGE_MODALITIES = frozenset({"SEG", "RTSTRUCT", "RTPLAN", "RTRECORD", "RTDOSE", "SR", "PR", "KO", "REG"})


@dataclass(frozen=True)
class SeriesInfo:
    """One image series found on disk; `files` are sorted along the slice normal when known."""

    uid: str
    description: str
    modality: str
    num_slices: int
    files: tuple[Path, ...]

    def describe(self) -> str:
        """One line naming the series by its technical fields (no patient data)."""
        description = f" '{self.description}'" if self.description else ""
        return f"{self.uid}{description} {self.modality or '?'} {self.num_slices} slice(s)"


@dataclass(frozen=True)
class DicomSeries:
    """A loaded series: the volume and the slice headers (pixel data dropped) in its z order."""

    volume: Volume
    datasets: list[pydicom.Dataset]
    info: SeriesInfo


def is_dicom_file(path: Path) -> bool:
    """Whether `path` starts with the DICOM preamble and 'DICM' marker."""
    try:
        with open(path, "rb") as stream:
            return stream.read(132)[128:] == b"DICM"
    except OSError:
        return False


def is_segmentation_file(path: Path) -> bool:
    """Whether the DICOM file `path` is a segmentation (Modality SEG), which is read as labels."""
    try:
        header = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["Modality"], force=True)
    except Exception:  # unreadable or not DICOM: the image reader reports it in its own words
        return False
    return str(header.get("Modality", "")).upper() == "SEG"


def list_series(path: str | os.PathLike) -> list[SeriesInfo]:
    """Every image series in a folder (searched recursively) or the one series of a DICOM file."""
    path = Path(path)
    single_file = path.is_file()
    files = [path] if single_file else _files_under(path)
    groups: dict[str, list[tuple[Path, pydicom.Dataset]]] = defaultdict(list)
    non_images = set()
    for file in files:
        try:
            header = read_dataset(file, pixels=False)
        except NotDicomError:
            if single_file:
                raise
            continue
        modality = str(header.get("Modality", "")).upper()
        if modality in NON_IMAGE_MODALITIES or "Rows" not in header:
            if single_file:
                _refuse_non_image(file, header, modality)
            non_images.add(modality or "unknown")
            continue
        groups[str(header.get("SeriesInstanceUID", ""))].append((file, header))
    if not groups:
        found = f" (only non-image DICOM objects: {', '.join(sorted(non_images))})" if non_images else ""
        raise EmptyFolderError(f"{path} holds no DICOM image series{found}")
    series = [_series_info(uid, members) for uid, members in groups.items()]
    return sorted(series, key=lambda info: (info.modality, info.description, info.uid))


def select_series(series: list[SeriesInfo], series_uid: str | None, where: Path) -> SeriesInfo:
    """The series named by `series_uid`, or the only one; anything ambiguous is an error."""
    listing = "; ".join(info.describe() for info in series)
    if series_uid is not None:
        for info in series:
            if info.uid == series_uid:
                return info
        raise SeriesSelectionError(f"series {series_uid} is not in {where}, which holds: {listing}")
    if len(series) > 1:
        raise SeriesSelectionError(f"{where} holds {len(series)} series; choose one by UID: {listing}")
    return series[0]


def read_dicom_series(
    path: str | os.PathLike, series_uid: str | None = None, allow_irregular: bool = False
) -> DicomSeries:
    """Load one series of a DICOM folder (or a single DICOM file as a one-slice volume)."""
    path = Path(path)
    return load_series(select_series(list_series(path), series_uid, path), allow_irregular)


def load_series(info: SeriesInfo, allow_irregular: bool = False) -> DicomSeries:
    """Decode a listed series into a Volume; uneven or missing slices fail unless `allow_irregular`."""
    label = f"series {info.uid}" + (f" ('{info.description}')" if info.description else "")
    datasets, images = [], []
    for file in info.files:
        dataset = read_dataset(file, pixels=True)
        images.append(_single_frame_pixels(dataset, file))
        drop_pixel_data(dataset)  # headers only from here on: the pixels live in the volume
        datasets.append(dataset)
    _check_consistent(datasets, images, label)
    geometry = slice_geometry(*_positions_and_orientations(datasets), _default_spacing(datasets[0]), label)
    if geometry.irregularities and not allow_irregular:
        raise SliceGeometryError(f"{geometry.irregularities[0]}; pass allow_irregular to load it anyway")
    order = geometry.order
    datasets = [datasets[i] for i in order]
    stored = np.stack([images[i] for i in order])
    row_spacing, column_spacing = _pixel_spacing(datasets[0])
    volume = Volume(
        array=to_modality_values(stored, datasets),
        spacing=(column_spacing, row_spacing, geometry.slice_spacing),
        origin=geometry.origin,
        direction=geometry.direction,
        modality=str(datasets[0].get("Modality", "")),
        warnings=geometry.irregularities + _geometry_warnings(datasets[0], label),
    )
    return DicomSeries(volume, datasets, replace(info, files=tuple(info.files[i] for i in order)))


def read_dataset(path: Path, pixels: bool) -> pydicom.Dataset:
    """Read one DICOM file (headers only unless `pixels`), accepting files without a preamble.

    A file without the 'DICM' marker is accepted only if it parses into a dataset with a SOP Class;
    its transfer syntax is then taken from how pydicom parsed it.
    """
    try:
        return pydicom.dcmread(path, stop_before_pixels=not pixels)
    except PermissionError:
        raise NotFoundError(f"{path} cannot be opened: permission denied") from None
    except Exception:  # no preamble, or damaged in one of many ways: retry without the preamble check
        pass
    try:
        dataset = pydicom.dcmread(path, stop_before_pixels=not pixels, force=True)
        if "SOPClassUID" not in dataset:
            raise InvalidDicomError("no SOP Class UID")
    except Exception:  # any parser failure on arbitrary bytes means "not DICOM"
        raise NotDicomError(f"{path} is not a DICOM file, or it is truncated") from None
    if "TransferSyntaxUID" not in dataset.file_meta:
        implicit, little = dataset.original_encoding
        dataset.file_meta.TransferSyntaxUID = (
            ImplicitVRLittleEndian if implicit else ExplicitVRLittleEndian if little else ExplicitVRBigEndian
        )
    return dataset


def _files_under(folder: Path) -> list[Path]:
    if not folder.exists():
        raise NotFoundError(f"{folder} does not exist")
    if not os.access(folder, os.R_OK | os.X_OK):
        raise NotFoundError(f"{folder} cannot be opened: permission denied")
    files = sorted(Path(root) / name for root, _, names in os.walk(folder) for name in names)
    if not files:
        raise EmptyFolderError(f"{folder} is empty")
    return files


def _refuse_non_image(path: Path, header: pydicom.Dataset, modality: str) -> None:
    if "Rows" not in header:
        kind = modality or "object"
        raise MissingPixelDataError(f"{path} holds no image (a DICOM {kind} without pixel data)")
    hint = "; open its source series and add it as labels" if modality == "SEG" else ""
    raise UnsupportedFormatError(f"{path} is a DICOM {modality} object, not an image series to segment{hint}")


def _series_info(uid: str, members: list[tuple[Path, pydicom.Dataset]]) -> SeriesInfo:
    first = members[0][1]
    members = sorted(members, key=lambda member: _sort_key(*member))
    return SeriesInfo(
        uid=uid,
        description=str(first.get("SeriesDescription", "") or ""),
        modality=str(first.get("Modality", "") or ""),
        num_slices=len(members),
        files=tuple(file for file, _ in members),
    )


def _sort_key(path: Path, header: pydicom.Dataset) -> tuple:
    """Position along the normal when known, then InstanceNumber, then the file name (no checks)."""
    position, orientation = header.get("ImagePositionPatient"), header.get("ImageOrientationPatient")
    along = 0.0
    if _has_geometry(header):
        along = float(np.asarray(position, float) @ orientation_matrix(np.asarray(orientation, float))[:, 2])
    return along, int(header.get("InstanceNumber", 0) or 0), str(path)


def _single_frame_pixels(dataset: pydicom.Dataset, path: Path) -> np.ndarray:
    frames = int(dataset.get("NumberOfFrames", 1) or 1)
    if frames > 1:
        raise UnsupportedFormatError(f"{path} is a multi-frame DICOM image ({frames} frames), which is not "
                                     "supported yet; convert it to NIfTI (e.g. with dcm2niix)")
    if int(dataset.get("SamplesPerPixel", 1) or 1) != 1:
        colour = dataset.get("PhotometricInterpretation", "colour")
        raise UnsupportedFormatError(f"{path} is a colour image ({colour}), not a grey-level study")
    return decode_pixels(dataset, path)


def _check_consistent(datasets: list[pydicom.Dataset], images: list[np.ndarray], label: str) -> None:
    shapes = {image.shape for image in images}
    if len(shapes) > 1:
        raise SliceGeometryError(f"{label}: slices differ in size ({', '.join(map(str, sorted(shapes)))})")
    spacings = {_pixel_spacing(ds) for ds in datasets}
    if len(spacings) > 1 and not np.allclose(list(spacings), next(iter(spacings)), atol=1e-4):
        raise SliceGeometryError(f"{label}: slices differ in pixel spacing")


def _has_geometry(dataset: pydicom.Dataset) -> bool:
    """Whether the slice has a 3-value position and a 6-value orientation."""
    position, orientation = dataset.get("ImagePositionPatient"), dataset.get("ImageOrientationPatient")
    return position is not None and orientation is not None and len(position) == 3 and len(orientation) == 6


def _positions_and_orientations(
    datasets: list[pydicom.Dataset],
) -> tuple[np.ndarray | None, np.ndarray | None]:
    if not all(_has_geometry(ds) for ds in datasets):
        return None, None
    positions = np.array([[float(v) for v in ds.ImagePositionPatient] for ds in datasets])
    orientations = np.array([[float(v) for v in ds.ImageOrientationPatient] for ds in datasets])
    return positions, orientations


def _pixel_spacing(dataset: pydicom.Dataset) -> tuple[float, float]:
    """(row spacing, column spacing) in mm; 1 mm when the image does not say (see _geometry_warnings)."""
    spacing = dataset.get("PixelSpacing") or dataset.get("ImagerPixelSpacing")
    if spacing is None or len(spacing) != 2:
        return 1.0, 1.0
    return float(spacing[0]), float(spacing[1])


def _default_spacing(dataset: pydicom.Dataset) -> float:
    """Slice spacing of a single slice, which has no neighbour to measure against."""
    for keyword in ("SpacingBetweenSlices", "SliceThickness"):
        value = dataset.get(keyword)
        if value not in (None, "") and float(value) > 0:
            return float(value)
    return 1.0


def _geometry_warnings(dataset: pydicom.Dataset, label: str) -> tuple[str, ...]:
    """What the reader had to assume for lack of tags (only a single slice gets this far without them)."""
    warnings = []
    if not _has_geometry(dataset):
        warnings.append(f"{label}: no ImagePositionPatient/ImageOrientationPatient; origin and direction "
                        "are assumed")
    if _pixel_spacing(dataset) == (1.0, 1.0) and not dataset.get("PixelSpacing"):
        warnings.append(f"{label}: no PixelSpacing; 1 mm pixels are assumed")
    return tuple(warnings)
