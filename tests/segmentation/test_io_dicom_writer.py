"""DICOM series writing: what segmentation.io.dicom_writer writes, the project's reader gives back."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest

from segmentation.errors import ConfigError, FedSegError
from segmentation.export import write_dicom_seg
from segmentation.io import read_volume
from segmentation.io.dicom import read_dicom_series
from segmentation.io.dicom_writer import derived_uid, write_dicom_series
from segmentation.volume import Volume

# Sagittal storage "PIR": columns run posterior, rows inferior, slices to the patient's right (-x in LPS).
PIR = (0.0, 0.0, -1.0, 1.0, 0.0, 0.0, 0.0, -1.0, 0.0)


def _write(volume: Volume, folder, **identity) -> list:
    names = {"series_description": "test series", "patient_id": "PID-7", "patient_name": "Test^Seven",
             "study_uid": derived_uid("study"), "series_uid": derived_uid("series"),
             "frame_of_reference_uid": derived_uid("frame")}
    return write_dicom_series(volume, folder, **{**names, **identity})


@pytest.fixture
def ct_volume() -> Volume:
    values = np.random.default_rng(0).integers(-1024, 3072, size=(5, 6, 7)).astype(np.int16)
    return Volume(values, spacing=(0.7, 0.9, 2.5), origin=(-100.25, 30.5, 12.0), direction=PIR, modality="ct")


def test_a_sagittal_anisotropic_ct_series_reads_back_exactly(ct_volume, tmp_path):
    files = _write(ct_volume, tmp_path / "series")
    assert len(files) == 5 and all(file.parent == tmp_path / "series" for file in files)
    back = read_volume(tmp_path / "series")
    np.testing.assert_array_equal(back.array, ct_volume.array)
    assert back.array.dtype == np.int16 and back.modality == "ct" and back.warnings == ()
    np.testing.assert_allclose(back.spacing, ct_volume.spacing, atol=1e-9)
    np.testing.assert_allclose(back.origin, ct_volume.origin, atol=1e-9)
    np.testing.assert_allclose(back.direction, PIR, atol=1e-12)


def test_slices_carry_their_own_position_and_the_series_orientation(ct_volume, tmp_path):
    files = _write(ct_volume, tmp_path / "series")
    headers = [pydicom.dcmread(file) for file in files]
    for k, header in enumerate(headers):
        # Slice k sits k x 2.5 mm along the third storage axis, which points to the right (-x).
        position = [float(v) for v in header.ImagePositionPatient]
        np.testing.assert_allclose(position, (-100.25 - 2.5 * k, 30.5, 12.0))
        assert int(header.InstanceNumber) == k + 1
    first = headers[0]
    assert [float(v) for v in first.ImageOrientationPatient] == [0, 1, 0, 0, 0, -1]  # rows P, columns I
    assert [float(v) for v in first.PixelSpacing] == [0.9, 0.7]  # between rows, then between columns
    assert (first.Rows, first.Columns) == (6, 7)
    assert first.SOPClassUID == "1.2.840.10008.5.1.4.1.1.2" and first.RescaleType == "HU"
    assert str(first.PatientName) == "Test^Seven" and first.PatientID == "PID-7"
    assert first.SeriesDescription == "test series"
    assert first.FrameOfReferenceUID == derived_uid("frame")
    assert first.StudyInstanceUID == derived_uid("study")
    assert len({header.SOPInstanceUID for header in headers}) == 5
    assert first.file_meta.TransferSyntaxUID == pydicom.uid.ExplicitVRLittleEndian


def test_float_mr_values_come_back_within_one_stored_step(tmp_path):
    values = np.random.default_rng(1).uniform(3.0, 1500.0, size=(3, 8, 9)).astype(np.float32)
    volume = Volume(values, spacing=(1.5, 1.5, 4.0), origin=(0.0, -20.0, 5.0), modality="mr-t2")
    _write(volume, tmp_path / "mr")
    back = read_volume(tmp_path / "mr")
    step = (1500.0 - 3.0) / 65535  # 16-bit stored values spread over the value range
    np.testing.assert_allclose(back.array, values, atol=step)
    assert back.modality == "mr"
    assert pydicom.dcmread(next((tmp_path / "mr").iterdir())).SOPClassUID == "1.2.840.10008.5.1.4.1.1.4"


def test_a_single_slice_keeps_its_thickness(tmp_path):
    volume = Volume(np.arange(12, dtype=np.int16).reshape(1, 3, 4), spacing=(2.0, 3.0, 5.0), modality="ct")
    _write(volume, tmp_path / "one")
    back = read_volume(tmp_path / "one")
    np.testing.assert_array_equal(back.array, volume.array)
    assert back.spacing == pytest.approx((2.0, 3.0, 5.0))


def test_the_series_can_be_the_source_of_a_dicom_seg(ct_volume, tmp_path):
    _write(ct_volume, tmp_path / "series")
    series = read_dicom_series(tmp_path / "series")
    mask = series.volume.with_array((series.volume.array > 1000).astype(np.uint8), labels={1: "bright"})
    path = write_dicom_seg(mask, series.datasets, tmp_path / "seg.dcm")
    assert pydicom.dcmread(path).FrameOfReferenceUID == derived_uid("frame")


def test_a_left_handed_grid_an_unknown_modality_and_a_used_folder_are_refused(ct_volume, tmp_path):
    left_handed = ct_volume.with_array(ct_volume.array, direction=(1, 0, 0, 0, 1, 0, 0, 0, -1))
    with pytest.raises(FedSegError, match="left-handed"):
        _write(left_handed, tmp_path / "a")
    with pytest.raises(ConfigError, match="CT or MR"):
        _write(ct_volume.with_array(ct_volume.array, modality="unknown"), tmp_path / "b")
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "keep.txt").write_text("mine")
    with pytest.raises(FedSegError, match="not an empty folder"):
        _write(ct_volume, tmp_path / "c")
    assert [path.name for path in (tmp_path / "c").iterdir()] == ["keep.txt"]
    assert sorted(path.name for path in tmp_path.iterdir()) == ["c"]  # nothing half-written


def test_derived_uids_are_stable_valid_and_keep_their_parts_apart():
    uid = derived_uid("phantom", 1, 23)
    assert uid == derived_uid("phantom", 1, 23) and pydicom.uid.UID(uid).is_valid
    assert uid != derived_uid("phantom", 12, 3)
