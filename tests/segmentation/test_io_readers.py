"""NIfTI, NRRD, MetaImage and Slicer segmentation reading/writing, and image/label pairs."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import slicerio
from pydicom.data import get_testdata_file

from segmentation.errors import (
    GeometryMismatchError,
    NotFoundError,
    SeriesSelectionError,
    StudyReadError,
    UnsupportedFormatError,
)
from segmentation.io import read_labeled_pair, read_volume, write_volume
from segmentation.volume import Volume

CHEST_LABELS = {1: "ribs", 2: "cervical vertebral column", 3: "thoracic vertebral column",
                4: "lumbar vertebral column", 5: "right lung", 6: "left lung", 7: "tissue"}


@pytest.fixture(scope="module")
def chest(slicerio_data) -> tuple[Volume, Volume]:
    return read_labeled_pair(slicerio_data / "CTChest4.nrrd", slicerio_data / "Segmentation.seg.nrrd")


def test_slicer_segmentation_labels_carry_segment_names_and_sit_on_the_ct(chest):
    image, label = chest
    assert label.labels == CHEST_LABELS
    assert label.array.dtype == np.uint8 and label.shape == image.shape
    lung_hu = image.array[label.array == 5].mean()
    bone_hu = image.array[label.array == 1].mean()
    assert lung_hu < -700 and bone_hu > 150, "labels do not line up with the CT (axis order?)"


def test_overlapping_segments_keep_every_name_and_warn(slicerio_data):
    label = read_volume(slicerio_data / "SegmentationOverlapping.seg.nrrd")
    assert label.labels[8] == "overlapping sphere" and len(label.labels) == 8
    assert np.count_nonzero(label.array == 8) > 0
    assert len(label.warnings) == 1 and "several segments" in label.warnings[0]


def test_segmentation_saved_as_plain_nrrd_is_still_recognised(slicerio_data, tmp_path):
    shutil.copy(slicerio_data / "Segmentation.seg.nrrd", tmp_path / "labels.nrrd")
    assert read_volume(tmp_path / "labels.nrrd").labels == CHEST_LABELS


@pytest.mark.parametrize("suffix", [".nii.gz", ".nii", ".nrrd", ".mha", ".mhd"])
def test_written_volumes_read_back_with_values_geometry_and_integer_labels(chest, tmp_path, suffix):
    image, label = chest
    image_path = write_volume(image, tmp_path / "sub" / f"image{suffix}")
    label_path = write_volume(label, tmp_path / f"label{suffix}")
    image_back, label_back = read_labeled_pair(image_path, label_path)
    np.testing.assert_array_equal(image_back.array, image.array)
    assert image_back.geometry_differences(image) == []
    assert label_back.array.dtype == np.uint8
    np.testing.assert_array_equal(label_back.array, label.array)
    assert label_back.labels == {value: f"label {value}" for value in range(1, 8)}


def test_slicer_segmentation_round_trip_keeps_names(chest, tmp_path):
    _, label = chest
    back = read_volume(write_volume(label, tmp_path / "out.seg.nrrd"))
    assert back.labels == CHEST_LABELS
    np.testing.assert_array_equal(back.array, label.array)
    assert back.geometry_differences(label) == []


def test_slicer_segmentation_round_trip_keeps_label_values_with_gaps_and_no_background_segment(tmp_path):
    array = np.zeros((2, 6, 6), np.uint8)
    array[0, :2], array[1, 3:] = 1, 3  # no label 2: a value must not shift to close the gap
    label = Volume(array, spacing=(1.0, 1.0, 2.0), labels={0: "background", 1: "liver", 3: "spleen"})
    path = write_volume(label, tmp_path / "gaps.seg.nrrd")
    back = read_volume(path)
    assert back.labels == {1: "liver", 3: "spleen"}
    np.testing.assert_array_equal(back.array, array)
    assert [segment["name"] for segment in slicerio.read_segmentation(str(path))["segments"]] == ["liver",
                                                                                                 "spleen"]


def test_boolean_mask_is_written_as_uint8(tmp_path):
    mask = Volume(np.eye(3, 4, dtype=bool)[None].repeat(2, axis=0))
    back = read_volume(write_volume(mask, tmp_path / "m.nrrd"))
    assert back.array.dtype == np.uint8 and back.array.sum() == 6


def test_mismatched_pair_error_names_both_files_and_the_difference(chest, tmp_path):
    image, label = chest
    image_path = write_volume(image, tmp_path / "image.nii.gz")
    moved = label.with_array(label.array, spacing=(3.0, 3.0, 5.0))
    label_path = write_volume(moved, tmp_path / "label.nii.gz")
    with pytest.raises(GeometryMismatchError) as error:
        read_labeled_pair(image_path, label_path)
    message = str(error.value)
    assert str(image_path) in message and str(label_path) in message and "spacing" in message


def test_label_files_must_hold_non_negative_integers(chest, tmp_path):
    image, _ = chest
    image_path = write_volume(image, tmp_path / "image.nrrd")
    as_float = write_volume(image.with_array(image.array.astype(np.float32) / 7), tmp_path / "float.nrrd")
    with pytest.raises(StudyReadError, match="non-integer values"):
        read_labeled_pair(image_path, as_float)
    with pytest.raises(StudyReadError, match="negative values"):
        read_labeled_pair(image_path, image_path)


def test_float_label_file_with_whole_values_becomes_an_integer_label_map(chest, tmp_path):
    image, label = chest
    float_label = write_volume(label.with_array(label.array.astype(np.float32)), tmp_path / "label.mha")
    _, back = read_labeled_pair(write_volume(image, tmp_path / "image.mha"), float_label)
    assert back.array.dtype == np.uint8
    np.testing.assert_array_equal(back.array, label.array)


def test_dicom_file_without_extension_is_recognised_by_content(tmp_path):
    shutil.copy(get_testdata_file("CT_small.dcm", download=False), tmp_path / "IM0001")
    assert read_volume(tmp_path / "IM0001").modality == "ct"


def test_bad_files_raise_typed_one_line_errors(chest, tmp_path):
    image, _ = chest
    for suffix in (".nii.gz", ".nii"):
        data = write_volume(image, tmp_path / f"image{suffix}").read_bytes()
        (tmp_path / f"cut{suffix}").write_bytes(data[: len(data) - 100])
    (tmp_path / "fake.nrrd").write_text("this is not NRRD\n")
    (tmp_path / "notes.xyz").write_text("hello")
    four_d = sitk.Image([3, 3, 3, 2], sitk.sitkUInt8)
    sitk.WriteImage(four_d, str(tmp_path / "time.nii.gz"))
    cases = [
        (tmp_path / "cut.nii.gz", StudyReadError, "truncated or corrupt"),
        (tmp_path / "cut.nii", StudyReadError, "truncated or corrupt"),
        (tmp_path / "fake.nrrd", StudyReadError, "not a readable NRRD file"),
        (tmp_path / "notes.xyz", UnsupportedFormatError, "supported: .seg.nrrd"),
        (tmp_path / "time.nii.gz", UnsupportedFormatError, "4D image"),
        (tmp_path / "absent.nii.gz", NotFoundError, "does not exist"),
    ]
    for path, error_type, words in cases:
        with pytest.raises(error_type) as error:
            read_volume(path)
        assert words in str(error.value) and "\n" not in str(error.value), path


def test_series_uid_on_a_plain_file_is_refused_not_ignored(slicerio_data):
    with pytest.raises(SeriesSelectionError, match="no series to choose"):
        read_volume(slicerio_data / "CTChest4.nrrd", series_uid="1.2.3")


def test_unwritable_requests_are_refused_before_writing(tmp_path):
    with pytest.raises(UnsupportedFormatError, match="cannot write"):
        write_volume(Volume(np.zeros((1, 2, 2))), tmp_path / "mask.png")
    with pytest.raises(UnsupportedFormatError, match="needs a label map"):
        write_volume(Volume(np.full((1, 2, 2), 0.5)), tmp_path / "mask.seg.nrrd")
    assert not any(Path(tmp_path).iterdir())
