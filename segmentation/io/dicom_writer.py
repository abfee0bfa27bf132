"""Write a Volume as a DICOM series folder: one single-frame CT or MR Image Storage file per slice.

The grid goes into ImagePositionPatient, ImageOrientationPatient and PixelSpacing, so the project's
reader (read_volume) gives back the same array, spacing, origin and direction. Integer voxels that
fit 16 bits come back exactly (CT in HU through RescaleIntercept); other values are stored as 16-bit
steps of RescaleSlope, as scanners store MR.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, MRImageStorage, generate_uid
from pydicom.valuerep import format_number_as_ds

from segmentation.errors import ConfigError, FedSegError
from segmentation.volume import Volume

_STORAGE = {"ct": ("CT", CTImageStorage), "mr": ("MR", MRImageStorage), "mr-t1": ("MR", MRImageStorage),
            "mr-t2": ("MR", MRImageStorage)}
_LEVELS = 2**16  # stored values are unsigned 16-bit


def derived_uid(*parts: object) -> str:
    """A UID that the same parts always give (a hash under pydicom's root), so regenerated data keeps
    its UIDs; the parts are joined with a separator, so ('1', '23') and ('12', '3') differ."""
    return str(generate_uid(entropy_srcs=["\x1f".join(str(part) for part in parts)]))


def write_dicom_series(
    volume: Volume,
    folder: Path,
    *,
    series_description: str,
    patient_id: str,
    patient_name: str,
    study_uid: str,
    series_uid: str,
    frame_of_reference_uid: str,
) -> list[Path]:
    """Write `volume` (modality ct or mr*) as one file per slice into the new folder `folder`, which
    appears complete or not at all; returns the files in slice order."""
    modality, sop_class = _storage(volume)
    direction = np.asarray(volume.direction, float).reshape(3, 3)
    if not np.allclose(np.cross(direction[:, 0], direction[:, 1]), direction[:, 2], atol=1e-6):
        raise FedSegError("the volume's slice axis is not its row axis cross its column axis (a left-handed "
                          "grid), which a DICOM series cannot store; reorient it first")
    folder = Path(folder)
    if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
        raise FedSegError(f"{folder} exists and is not an empty folder; a DICOM series needs a folder of its "
                          "own")
    stored, slope, intercept = _stored_values(volume.array)
    common = _common_header(volume, modality, slope, intercept)
    common.update({
        "SeriesDescription": series_description, "PatientID": patient_id, "PatientName": patient_name,
        "StudyInstanceUID": study_uid, "SeriesInstanceUID": series_uid,
        "FrameOfReferenceUID": frame_of_reference_uid, "SOPClassUID": sop_class,
    })
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        names = [_write_slice(staging, k, stored[k], common, volume, direction) for k in range(len(stored))]
        if folder.exists():
            folder.rmdir()  # empty (checked above); Windows renames onto no existing folder
        os.replace(staging, folder)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return [folder / name for name in names]


def _storage(volume: Volume) -> tuple[str, str]:
    """DICOM's Modality and the SOP Class of the volume's modality tag."""
    if volume.modality not in _STORAGE:
        raise ConfigError(f"a DICOM series is written for CT or MR volumes, not {volume.modality!r}")
    return _STORAGE[volume.modality]


def _ds(value: float) -> str:
    """A decimal string (DS) of at most 16 characters, as DICOM allows."""
    return format_number_as_ds(float(value))


def _stored_values(array: np.ndarray) -> tuple[np.ndarray, str, str]:
    """(uint16 stored values, RescaleSlope, RescaleIntercept): integers that fit 16 bits exactly (shifted
    by a negative minimum, like CT's -1024), anything else in 2^16 equal steps from its minimum."""
    low, high = float(array.min()), float(array.max())
    if np.issubdtype(array.dtype, np.integer) and high - min(low, 0.0) < _LEVELS:
        intercept = int(min(low, 0.0))
        return (array.astype(np.int64) - intercept).astype(np.uint16), "1", str(intercept)
    slope = _ds((high - low) / (_LEVELS - 1) if high > low else 1.0)
    intercept = _ds(low)
    steps = np.rint((array.astype(np.float64) - float(intercept)) / float(slope))
    return np.clip(steps, 0, _LEVELS - 1).astype(np.uint16), slope, intercept


def _common_header(volume: Volume, modality: str, slope: str, intercept: str) -> dict[str, object]:
    """What every slice of the series shares: patient and study modules (type 2 left empty), the
    pixel layout and the rescale to modality values."""
    _, rows, columns = volume.shape
    header: dict[str, object] = {
        "Modality": modality, "Manufacturer": "FedSeg Workbench", "SeriesNumber": 1, "StudyID": "1",
        "PatientBirthDate": "", "PatientSex": "", "StudyDate": "", "StudyTime": "",
        "ReferringPhysicianName": "", "AccessionNumber": "", "PositionReferenceIndicator": "",
        "ImageType": ["DERIVED", "SECONDARY"], "SamplesPerPixel": 1,
        "PhotometricInterpretation": "MONOCHROME2", "Rows": rows, "Columns": columns,
        "BitsAllocated": 16, "BitsStored": 16, "HighBit": 15,
        "PixelRepresentation": 0, "PixelSpacing": [_ds(volume.spacing[1]), _ds(volume.spacing[0])],
        "SliceThickness": _ds(volume.spacing[2]), "SpacingBetweenSlices": _ds(volume.spacing[2]),
        "RescaleSlope": slope, "RescaleIntercept": intercept,
    }
    if modality == "CT":
        header.update({"RescaleType": "HU", "KVP": ""})
    else:  # MR Image module's type 1 attributes
        header.update({"ScanningSequence": "SE", "SequenceVariant": "NONE", "ScanOptions": "",
                       "MRAcquisitionType": "2D"})
    return header


def _write_slice(
    folder: Path, k: int, pixels: np.ndarray, common: dict[str, object], volume: Volume, direction: np.ndarray
) -> str:
    """Write slice k (position: origin + k slice steps along the third axis); returns the file name."""
    position = np.asarray(volume.origin, float) + k * volume.spacing[2] * direction[:, 2]
    dataset = Dataset()
    for keyword, value in common.items():
        setattr(dataset, keyword, value)
    dataset.SOPInstanceUID = derived_uid(common["SeriesInstanceUID"], k)
    dataset.InstanceNumber = k + 1
    dataset.ImagePositionPatient = [_ds(value) for value in position]
    dataset.ImageOrientationPatient = [_ds(value) for value in (*direction[:, 0], *direction[:, 1])]
    dataset.SliceLocation = _ds(position @ direction[:, 2])
    dataset.PixelData = np.ascontiguousarray(pixels, dtype="<u2").tobytes()
    dataset.file_meta = FileMetaDataset()
    dataset.file_meta.MediaStorageSOPClassUID = dataset.SOPClassUID
    dataset.file_meta.MediaStorageSOPInstanceUID = dataset.SOPInstanceUID
    dataset.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    name = f"slice_{k:04d}.dcm"
    dataset.save_as(folder / name, enforce_file_format=True)
    return name
