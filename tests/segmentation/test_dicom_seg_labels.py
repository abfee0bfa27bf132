"""DICOM-SEG labels: a SEG of a known label map, written over a sagittal (PIR) DICOM series, reads back
onto that series' grid voxel for voxel, with segment numbers as values and segment labels as names."""

from __future__ import annotations

import copy
import shutil

import highdicom as hd
import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.sr.codedict import codes

from segmentation.errors import GeometryMismatchError
from segmentation.export import write_dicom_seg
from segmentation.io import read_labeled_pair, write_volume
from segmentation.io.dicom import read_dicom_series
from segmentation.io.dicom_seg import dicom_seg_problem
from segmentation.io.dicom_writer import derived_uid, write_dicom_series
from segmentation.io.readers import read_label_map
from segmentation.volume import Volume

# Sagittal storage: columns run posterior, rows inferior, slices toward the patient's right (-x in LPS).
PIR = (0.0, 0.0, -1.0, 1.0, 0.0, 0.0, 0.0, -1.0, 0.0)
NAMES = {1: "liver", 2: "spleen", 3: "pancreas"}  # pancreas is named but found nowhere


def _ct(seed: int = 0) -> Volume:
    values = np.random.default_rng(seed).integers(-1024, 2000, size=(6, 9, 11)).astype(np.int16)
    return Volume(values, spacing=(0.7, 0.9, 2.5), origin=(-100.25, 30.5, 12.0), direction=PIR, modality="ct")


def _truth() -> np.ndarray:
    """The label map every test expects back, (z, y, x), asymmetric along each axis."""
    label = np.zeros((6, 9, 11), np.uint8)
    label[1:4, 2:6, 3:9] = 1
    label[4, 0:3, 7:11] = 2
    label[0, 8, 10] = 2  # one voxel in the first slice's last corner
    return label


def _series(folder, seed: int = 0, name: str = "series") -> list:
    """Write the CT as a PIR series; return its slice headers in slice order."""
    write_dicom_series(_ct(seed), folder, series_description=name, patient_id="PID-1",
                       patient_name="Test^One", study_uid=derived_uid("study"),
                       series_uid=derived_uid(name, seed), frame_of_reference_uid=derived_uid("frame"))
    return read_dicom_series(folder).datasets


def _seg(datasets, path, masks: dict[int, np.ndarray], omit_empty_frames: bool = True):
    """A BINARY SEG written by highdicom itself (not the project's writer), one mask per segment."""
    algorithm = hd.AlgorithmIdentificationSequence(name="test", version="1",
                                                   family=codes.cid7162.ArtificialIntelligence)
    descriptions = [
        hd.seg.SegmentDescription(
            segment_number=number, segment_label=NAMES[number],
            segmented_property_category=codes.SCT.Organ, segmented_property_type=codes.SCT.Organ,
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC, algorithm_identification=algorithm)
        for number in masks
    ]
    seg = hd.seg.Segmentation(
        source_images=datasets, pixel_array=np.stack(list(masks.values()), axis=-1).astype(np.uint8),
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY, segment_descriptions=descriptions,
        series_instance_uid=hd.UID(), series_number=5, sop_instance_uid=hd.UID(), instance_number=1,
        manufacturer="test", manufacturer_model_name="test", software_versions="1", device_serial_number="1",
        omit_empty_frames=omit_empty_frames,
    )
    seg.save_as(path)
    return path


@pytest.fixture
def exported(tmp_path):
    """(series folder, slice headers, DICOM-SEG the project exported of the known label map)."""
    datasets = _series(tmp_path / "series")
    mask = _ct().with_array(_truth(), labels=NAMES)
    return tmp_path / "series", datasets, write_dicom_seg(mask, datasets, tmp_path / "seg.dcm")


def test_an_exported_seg_reads_back_onto_its_sagittal_series_voxel_for_voxel(exported):
    folder, _, seg = exported
    image, label = read_labeled_pair(folder, seg)
    np.testing.assert_array_equal(label.array, _truth())
    assert label.labels == NAMES and label.warnings == ()
    assert label.spacing == image.spacing and label.origin == image.origin
    np.testing.assert_allclose(label.direction, PIR, atol=1e-12)


def test_a_seg_alone_keeps_the_grid_of_its_frames(exported):
    _, _, seg = exported
    label = read_label_map(seg)
    np.testing.assert_array_equal(label.array, _truth())
    np.testing.assert_allclose(label.spacing, (0.7, 0.9, 2.5), atol=1e-9)
    np.testing.assert_allclose(label.origin, (-100.25, 30.5, 12.0), atol=1e-9)
    np.testing.assert_allclose(label.direction, PIR, atol=1e-9)


def test_over_a_nifti_copy_of_the_series_the_seg_is_placed_by_position(exported, tmp_path):
    folder, _, seg = exported
    nifti = write_volume(_ct(), tmp_path / "ct.nii.gz")
    _, label = read_labeled_pair(nifti, seg)
    np.testing.assert_array_equal(label.array, _truth())
    # Slices 1..4 and rows 0..7 of the image: its first slice sits one 2.5 mm step to the right (-x).
    cropped = write_volume(_ct().with_array(_ct().array[1:5, :8], origin=(-102.75, 30.5, 12.0)),
                           tmp_path / "crop.nii.gz")
    inner = _truth()
    inner[0, 8, 10] = 0  # the only labelled voxel outside the crop
    inner_seg = write_dicom_seg(_ct().with_array(inner, labels=NAMES), read_dicom_series(folder).datasets,
                                tmp_path / "inner.dcm")
    _, placed = read_labeled_pair(cropped, inner_seg)
    np.testing.assert_array_equal(placed.array, inner[1:5, :8])
    with pytest.raises(GeometryMismatchError, match="outside the image"):
        read_labeled_pair(cropped, seg)


def test_sparse_frames_and_overlapping_segments(tmp_path):
    datasets = _series(tmp_path / "series")
    liver = np.zeros((6, 9, 11), bool)
    liver[2, 1:5, 1:5] = True
    spleen = np.zeros((6, 9, 11), bool)
    spleen[2, 3:7, 3:7] = True  # overlaps the liver in slice 2 only
    spleen[5, 0, 0] = True
    seg = _seg(datasets, tmp_path / "sparse.dcm", {1: liver, 2: spleen})
    assert pydicom.dcmread(seg).NumberOfFrames == 3  # empty frames were left out
    expected = np.where(spleen, 2, np.where(liver, 1, 0))  # the higher segment number wins
    for image in (tmp_path / "series", write_volume(_ct(), tmp_path / "ct.nii.gz")):
        _, label = read_labeled_pair(image, seg)
        np.testing.assert_array_equal(label.array, expected)
        assert label.labels == {1: "liver", 2: "spleen"}
        assert any("overlap" in warning for warning in label.warnings)


def test_a_seg_of_another_series_or_off_the_grid_is_a_typed_error(exported, tmp_path):
    folder, _, seg = exported
    stranger = get_testdata_file("liver_1frame.dcm", download=False)  # a real SEG of someone else's CT
    with pytest.raises(GeometryMismatchError, match="segments series .* not series"):
        read_labeled_pair(folder, stranger)
    other = _series(tmp_path / "other", seed=1, name="other")  # same grid and frame, another series
    other_seg = write_dicom_seg(_ct().with_array(_truth(), labels=NAMES), other, tmp_path / "other.dcm")
    with pytest.raises(GeometryMismatchError, match="not series"):
        read_labeled_pair(folder, other_seg)
    half_voxel = _ct().with_array(_ct().array, origin=(-100.25, 30.85, 12.0))  # 0.35 mm = half a row
    with pytest.raises(GeometryMismatchError, match="not on the image's voxel grid"):
        read_labeled_pair(write_volume(half_voxel, tmp_path / "shifted.nii.gz"), seg)
    finer = _ct().with_array(np.zeros((12, 9, 11), np.int16), spacing=(0.7, 0.9, 1.25))  # 1.25 mm slices
    with pytest.raises(GeometryMismatchError, match="voxels measure"):
        read_labeled_pair(write_volume(finer, tmp_path / "finer.nii.gz"), seg)


def test_a_seg_naming_slices_the_series_folder_lacks_is_refused(exported, tmp_path):
    folder, _, seg = exported
    partial = shutil.copytree(folder, tmp_path / "partial")
    (partial / "slice_0005.dcm").unlink()  # the last slice: no gap, the series still reads
    with pytest.raises(GeometryMismatchError, match="1 slice"):
        read_labeled_pair(partial, seg)


def test_one_series_of_a_folder_of_two_takes_its_seg(exported, tmp_path):
    folder, datasets, seg = exported
    shutil.copytree(folder, tmp_path / "both" / "a")
    _series(tmp_path / "both" / "b", seed=3, name="second")
    _, label = read_labeled_pair(tmp_path / "both", seg, series_uid=str(datasets[0].SeriesInstanceUID))
    np.testing.assert_array_equal(label.array, _truth())


def test_a_series_says_whether_it_can_be_the_source_of_a_dicom_seg(exported):
    _, datasets, _ = exported
    assert dicom_seg_problem(datasets) is None
    without = copy.deepcopy(datasets)
    del without[2].FrameOfReferenceUID
    assert dicom_seg_problem(without) == "cannot be exported as DICOM-SEG: no Frame of Reference UID"
    anonymous = copy.deepcopy(datasets)
    for dataset in anonymous:
        del dataset.PatientBirthDate
    assert dicom_seg_problem(anonymous) == "cannot be exported as DICOM-SEG: its slices lack PatientBirthDate"
    assert "not a DICOM series" in dicom_seg_problem([])
