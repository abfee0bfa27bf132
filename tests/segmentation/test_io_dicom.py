"""DICOM reading on real files: SimpleITK-written series from the chest CT and pydicom's test files."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from pydicom.data import get_testdata_file

from segmentation.errors import (
    EmptyFolderError,
    MissingPixelDataError,
    NotDicomError,
    NotFoundError,
    SeriesSelectionError,
    SliceGeometryError,
    UnsupportedFormatError,
    UnsupportedTransferSyntaxError,
)
from segmentation.io import read_volume
from segmentation.io.dicom import list_series, read_dicom_series
from segmentation.io.dicom_pixels import decoder_hint


def pydicom_file(name: str) -> Path:
    path = get_testdata_file(name, download=False)
    assert path is not None, f"pydicom test file {name} is not installed"
    return Path(path)


def copy_series(source: Path, target: Path) -> list[Path]:
    shutil.copytree(source, target)
    return sorted(target.glob("*.dcm"))


def series_uid_in(folder: Path) -> str:
    return str(pydicom.dcmread(next(folder.glob("*.dcm")), stop_before_pixels=True).SeriesInstanceUID)


def test_chest_series_round_trips_hounsfield_units_and_geometry(chest_dicom_series, slicerio_data):
    series = read_dicom_series(chest_dicom_series)
    reference = read_volume(slicerio_data / "CTChest4.nrrd")
    volume = series.volume
    assert volume.modality == "ct"
    assert volume.shape == (34, 128, 128)
    assert volume.geometry_differences(reference) == []
    assert np.abs(volume.array.astype(np.int32) - reference.array).max() <= 1
    stored = pydicom.dcmread(series.info.files[0]).pixel_array
    assert stored.min() == volume.array[0].min() + 1024, "RescaleIntercept was not applied"
    assert volume.warnings == ()


def test_slice_order_comes_from_positions_not_file_names_or_instance_numbers(chest_dicom_series, tmp_path):
    expected = read_dicom_series(chest_dicom_series).volume.array
    rng = np.random.default_rng(3)
    files = copy_series(chest_dicom_series, tmp_path / "copy")
    for file, new_name, instance in zip(files, rng.permutation(len(files)), rng.permutation(len(files)),
                                        strict=True):
        dataset = pydicom.dcmread(file)
        dataset.InstanceNumber = int(instance) + 1
        dataset.save_as(file.parent / f"IM{new_name:05d}")
        file.unlink()
    series = read_dicom_series(tmp_path / "copy")
    np.testing.assert_array_equal(series.volume.array, expected)
    heights = [float(ds.ImagePositionPatient[2]) for ds in series.datasets]
    assert heights == sorted(heights) and len(heights) == 34
    assert [pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID for f in series.info.files] == [
        ds.SOPInstanceUID for ds in series.datasets
    ]
    assert all("PixelData" not in ds for ds in series.datasets)


def test_missing_middle_slice_is_refused_unless_irregular_spacing_is_allowed(chest_dicom_series, tmp_path):
    files = copy_series(chest_dicom_series, tmp_path / "gap")
    files[17].unlink()
    with pytest.raises(SliceGeometryError, match="about 1 slice.s. missing"):
        read_volume(tmp_path / "gap")
    volume = read_volume(tmp_path / "gap", allow_irregular=True)
    assert volume.shape == (33, 128, 128)
    assert volume.spacing[2] == pytest.approx(10.0)
    assert len(volume.warnings) == 1 and "not uniform" in volume.warnings[0]


def test_two_slices_at_one_position_are_refused(chest_dicom_series, tmp_path):
    files = copy_series(chest_dicom_series, tmp_path / "dup")
    dataset = pydicom.dcmread(files[5])
    dataset.SOPInstanceUID = pydicom.uid.generate_uid(entropy_srcs=["duplicate"])
    dataset.save_as(tmp_path / "dup" / "extra.dcm")
    with pytest.raises(SliceGeometryError, match="share a position"):
        read_volume(tmp_path / "dup", allow_irregular=True)


def test_two_series_folder_lists_both_and_loads_only_the_requested_one(two_series_folder, knee_mr):
    chest_uid, knee_uid = series_uid_in(two_series_folder / "a"), series_uid_in(two_series_folder / "b")
    series = {info.uid: info for info in list_series(two_series_folder)}
    assert set(series) == {chest_uid, knee_uid}
    assert (series[chest_uid].modality, series[chest_uid].num_slices) == ("CT", 34)
    assert (series[knee_uid].description, series[knee_uid].num_slices) == ("knee", 5)
    with pytest.raises(SeriesSelectionError) as error:
        read_volume(two_series_folder)
    for expected in (chest_uid, knee_uid, "'chest' CT 34 slice", "'knee' MR 5 slice"):
        assert expected in str(error.value)
    knee = read_volume(two_series_folder, series_uid=knee_uid)
    assert knee.modality == "mr"
    np.testing.assert_array_equal(knee.array, sitk.GetArrayFromImage(knee_mr))
    with pytest.raises(SeriesSelectionError, match="1.2.3.4 is not in"):
        read_volume(two_series_folder, series_uid="1.2.3.4")


def test_single_dicom_file_is_a_one_slice_volume_in_hounsfield_units():
    path = pydicom_file("CT_small.dcm")
    dataset = pydicom.dcmread(path)
    volume = read_volume(path)
    assert volume.shape == (1, 128, 128) and volume.modality == "ct"
    expected = dataset.pixel_array * float(dataset.RescaleSlope) + float(dataset.RescaleIntercept)
    np.testing.assert_allclose(volume.array[0], expected)
    assert volume.spacing == pytest.approx((0.661468, 0.661468, 5.0))
    assert volume.origin == pytest.approx(tuple(float(v) for v in dataset.ImagePositionPatient))


@pytest.mark.parametrize("compressed", ["MR_small_RLE.dcm", "MR_small_jp2klossless.dcm"])
def test_losslessly_compressed_files_decode_to_the_uncompressed_values(compressed):
    np.testing.assert_array_equal(read_volume(pydicom_file(compressed)).array,
                                  read_volume(pydicom_file("MR_small.dcm")).array)


def test_image_without_position_tags_loads_with_a_warning():
    volume = read_volume(pydicom_file("JPEG2000.dcm"))
    assert volume.shape == (1, 1024, 256)
    assert volume.origin == (0.0, 0.0, 0.0)
    assert any("ImagePositionPatient" in warning for warning in volume.warnings)


@pytest.mark.parametrize(
    ("name", "error_type", "words"),
    [
        ("MR_truncated.dcm", NotDicomError, "truncated"),
        ("no_meta.dcm", NotDicomError, "not a DICOM file"),
        ("rtplan.dcm", MissingPixelDataError, "RTPLAN without pixel data"),
        ("JPEG-lossy.dcm", UnsupportedTransferSyntaxError, "pip install pylibjpeg pylibjpeg-libjpeg"),
        ("liver_1frame.dcm", UnsupportedFormatError, "DICOM SEG object"),
        ("SC_rgb_small_odd.dcm", UnsupportedFormatError, "colour image"),
    ],
)
def test_bad_pydicom_test_files_raise_their_typed_one_line_error(name, error_type, words):
    with pytest.raises(error_type) as error:
        read_volume(pydicom_file(name))
    message = str(error.value)
    assert words in message and name in message and "\n" not in message


@pytest.mark.parametrize(
    ("transfer_syntax", "hint"),
    [
        (pydicom.uid.JPEG2000, "pip install pylibjpeg pylibjpeg-openjpeg"),
        (pydicom.uid.HTJ2KLossless, "pip install pylibjpeg pylibjpeg-openjpeg"),
        (pydicom.uid.JPEGLSLossless, "pip install pyjpegls"),
        (pydicom.uid.JPEGBaseline8Bit, "pip install pylibjpeg pylibjpeg-libjpeg"),
        ("1.2.3.4.5.6", "pip install python-gdcm"),
    ],
)
def test_decoder_hint_names_the_package_for_each_compression(transfer_syntax, hint):
    assert decoder_hint(transfer_syntax) == hint


def test_truncated_slice_in_a_series_is_named(chest_dicom_series, tmp_path):
    files = copy_series(chest_dicom_series, tmp_path / "cut")
    files[3].write_bytes(files[3].read_bytes()[:-5000])
    with pytest.raises(NotDicomError, match=files[3].name):
        read_volume(tmp_path / "cut")


def test_folders_without_images_raise_typed_errors(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(EmptyFolderError, match="is empty"):
        read_volume(tmp_path / "empty")
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "notes.txt").write_text("not an image")
    (tmp_path / "junk" / "scan.dcm").write_bytes(b"\x00" * 40)
    with pytest.raises(EmptyFolderError, match="no DICOM image series"):
        read_volume(tmp_path / "junk")
    (tmp_path / "plans").mkdir()
    shutil.copy(pydicom_file("rtplan.dcm"), tmp_path / "plans")
    with pytest.raises(EmptyFolderError, match="RTPLAN"):
        read_volume(tmp_path / "plans")
    with pytest.raises(NotFoundError, match="does not exist"):
        read_volume(tmp_path / "nowhere")


def test_non_dicom_files_next_to_a_series_are_ignored(chest_dicom_series, tmp_path):
    copy_series(chest_dicom_series, tmp_path / "mixed")
    (tmp_path / "mixed" / "README").write_text("exported by a PACS")
    shutil.copy(pydicom_file("rtplan.dcm"), tmp_path / "mixed")
    [info] = list_series(tmp_path / "mixed")
    assert info.num_slices == 34

