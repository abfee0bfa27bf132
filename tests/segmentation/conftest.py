"""Study fixtures for the segmentation tests: real DICOM series written by SimpleITK from the chest CT
(with labels) that slicerio ships. Session-scoped and read-only: copy a folder before changing it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import slicerio
from pydicom.uid import generate_uid

SLICERIO_DATA = Path(slicerio.__file__).parent / "data"
CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
MR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.4"
PATIENT_NAME, PATIENT_ID = "Doe^Jane", "PID-0042"
CHEST_SERIES_UID = generate_uid(entropy_srcs=["fedseg chest series"])
KNEE_SERIES_UID = generate_uid(entropy_srcs=["fedseg knee series"])
STUDY_UID = generate_uid(entropy_srcs=["fedseg study"])
FRAME_OF_REFERENCE_UID = generate_uid(entropy_srcs=["fedseg frame of reference"])


def write_dicom_series(
    image: sitk.Image, folder: Path, *, modality: str, series_uid: str, description: str,
    rescale_intercept: int = 0,
) -> list[Path]:
    """Write a 3D int16 image (modality values, e.g. HU) as one single-frame DICOM file per slice.

    GDCM stores (value - intercept) and writes the intercept, so readers that apply RescaleIntercept
    get the original values back.
    """
    folder.mkdir(parents=True, exist_ok=True)
    d = image.GetDirection()
    orientation = "\\".join(f"{v:.6f}" for v in (d[0], d[3], d[6], d[1], d[4], d[7]))
    shared = {
        "0008|0016": CT_IMAGE_STORAGE if modality == "CT" else MR_IMAGE_STORAGE,
        "0008|0060": modality,
        "0008|103e": description,
        "0010|0010": PATIENT_NAME,
        "0010|0020": PATIENT_ID,
        "0020|000d": STUDY_UID,
        "0020|000e": series_uid,
        "0020|0052": FRAME_OF_REFERENCE_UID,
        "0020|0037": orientation,
        "0028|1052": str(rescale_intercept),
        "0028|1053": "1",
        "0018|0050": f"{image.GetSpacing()[2]:.6f}",
    }
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    paths = []
    for k in range(image.GetDepth()):
        slice_image = image[:, :, k]
        for tag, value in shared.items():
            slice_image.SetMetaData(tag, value)
        position = image.TransformIndexToPhysicalPoint((0, 0, k))
        slice_image.SetMetaData("0020|0032", "\\".join(f"{v:.6f}" for v in position))
        slice_image.SetMetaData("0020|0013", str(k + 1))
        slice_image.SetMetaData("0008|0018", generate_uid(entropy_srcs=[series_uid, str(k)]))
        paths.append(folder / f"slice{k:03d}.dcm")
        writer.SetFileName(str(paths[-1]))
        writer.Execute(slice_image)
    return paths


@pytest.fixture(scope="session")
def slicerio_data() -> Path:
    """slicerio's bundled data: CTChest4.nrrd, Segmentation.seg.nrrd, SegmentationOverlapping.seg.nrrd."""
    return SLICERIO_DATA


@pytest.fixture(scope="session")
def chest_ct() -> sitk.Image:
    """slicerio's chest CT (128x128x34, 3 x 3 x 10 mm, LPS-flipped axes) in HU as int16."""
    return sitk.Cast(sitk.ReadImage(str(SLICERIO_DATA / "CTChest4.nrrd")), sitk.sitkInt16)


@pytest.fixture(scope="session")
def chest_dicom_series(tmp_path_factory, chest_ct) -> Path:
    """Folder holding the chest CT as a DICOM CT series (RescaleIntercept -1024, patient Doe^Jane)."""
    folder = tmp_path_factory.mktemp("chest_dicom")
    write_dicom_series(chest_ct, folder, modality="CT", series_uid=CHEST_SERIES_UID,
                       description="chest", rescale_intercept=-1024)
    return folder


@pytest.fixture(scope="session")
def knee_mr() -> sitk.Image:
    """A small seeded MR-like volume (24x20x5, 1 x 1 x 4 mm) with its own geometry."""
    values = np.random.default_rng(7).integers(0, 900, size=(5, 20, 24)).astype(np.int16)
    image = sitk.GetImageFromArray(values)
    image.SetSpacing((1.0, 1.0, 4.0))
    image.SetOrigin((-12.0, -10.0, 40.0))
    return image


@pytest.fixture(scope="session")
def two_series_folder(tmp_path_factory, chest_ct, knee_mr) -> Path:
    """One folder (nested as exporters do) holding the chest CT series and a 5-slice MR series."""
    folder = tmp_path_factory.mktemp("two_series")
    write_dicom_series(chest_ct, folder / "a", modality="CT", series_uid=CHEST_SERIES_UID,
                       description="chest", rescale_intercept=-1024)
    write_dicom_series(knee_mr, folder / "b", modality="MR", series_uid=KNEE_SERIES_UID, description="knee")
    return folder


@pytest.fixture(scope="session")
def write_series():
    """write_dicom_series, for tests that write a study of their own as DICOM."""
    return write_dicom_series
