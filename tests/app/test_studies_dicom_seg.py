"""The viewer's study service with DICOM-SEG: a SEG opens as labels over its own series (and only over
it), and a series that cannot be the source of a DICOM-SEG says so as soon as it is loaded."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest

from app.models.viewer import ViewerModel
from app.services.studies import load_label_map, load_study
from segmentation.errors import GeometryMismatchError, UnsupportedFormatError
from segmentation.export import write_dicom_seg
from segmentation.io import write_volume
from segmentation.io.dicom_writer import derived_uid, write_dicom_series
from segmentation.volume import Volume

# Coronal storage "LIP": columns run left, rows inferior, slices toward posterior.
LIP = (1.0, 0.0, 0.0, 0.0, 0.0, -1.0, 0.0, 1.0, 0.0)
NAMES = {1: "liver", 2: "spleen"}


def _ct(seed: int) -> Volume:
    values = np.random.default_rng(seed).integers(-1000, 1500, size=(4, 7, 9)).astype(np.int16)
    return Volume(values, spacing=(0.8, 1.1, 3.0), origin=(20.0, -40.0, 75.5), direction=LIP, modality="ct")


def _truth() -> np.ndarray:
    label = np.zeros((4, 7, 9), np.uint8)
    label[1:3, 1:4, 2:7] = 1
    label[3, 5:, :2] = 2
    return label


def _series(folder, seed: int) -> None:
    write_dicom_series(_ct(seed), folder, series_description=f"ct {seed}", patient_id="P", patient_name="A^B",
                       study_uid=derived_uid("study"), series_uid=derived_uid("series", seed),
                       frame_of_reference_uid=derived_uid("frame"))


@pytest.fixture
def study_and_seg(tmp_path):
    _series(tmp_path / "ct", seed=0)
    study = load_study(tmp_path / "ct")
    seg = write_dicom_seg(study.image.with_array(_truth(), labels=NAMES), list(study.dicom_datasets),
                          tmp_path / "seg.dcm")
    return study, seg


def test_a_dicom_seg_opens_as_labels_over_its_series(study_and_seg):
    study, seg = study_and_seg
    assert study.dicom_seg_problem is None and study.can_export_dicom_seg
    labels = load_label_map(seg, study)
    np.testing.assert_array_equal(labels.array, _truth())
    viewer = ViewerModel()
    viewer.set_study(study)
    viewer.set_labels(labels, seg.name)
    assert [(layer.value, layer.name) for layer in viewer.layers.values()] == [(1, "liver"), (2, "spleen")]


def test_a_dicom_seg_of_another_series_is_refused_with_both_series_named(study_and_seg, tmp_path):
    study, seg = study_and_seg
    _series(tmp_path / "other", seed=1)
    other = load_study(tmp_path / "other")
    with pytest.raises(GeometryMismatchError) as error:
        load_label_map(seg, other)
    message = str(error.value)
    assert f"segments series {study.series_uid}, not series {other.series_uid}" in message
    with pytest.raises(UnsupportedFormatError, match="add it as labels"):
        load_study(seg)


def test_a_series_without_a_frame_of_reference_is_flagged_when_loaded(tmp_path):
    _series(tmp_path / "ct", seed=0)
    for path in (tmp_path / "ct").iterdir():
        dataset = pydicom.dcmread(path)
        del dataset.FrameOfReferenceUID
        dataset.save_as(path)
    study = load_study(tmp_path / "ct")
    problem = "cannot be exported as DICOM-SEG: no Frame of Reference UID"
    assert study.is_dicom and not study.can_export_dicom_seg and study.dicom_seg_problem == problem
    assert ("Warning", problem) in study.details


def test_a_nifti_study_is_not_flagged_but_cannot_export_dicom_seg(study_and_seg, tmp_path):
    _, seg = study_and_seg
    study = load_study(write_volume(_ct(0), tmp_path / "ct.nii.gz"))
    assert study.dicom_seg_problem is None and not study.can_export_dicom_seg
    assert all(name != "Warning" for name, _ in study.details)
    np.testing.assert_array_equal(load_label_map(seg, study).array, _truth())  # placed by position
