"""DICOM-SEG from the real chest CT series: references its source and reads back to the same mask."""

import highdicom as hd
import numpy as np
import pytest
from pydicom import Dataset

from segmentation.errors import FedSegError, GeometryMismatchError, NotDicomError
from segmentation.export import write_dicom_seg
from segmentation.io import read_label_map
from segmentation.io.dicom import read_dicom_series

LABELS = {0: "background", 1: "bone", 2: "lung", 3: "nodule"}  # the model finds no nodule


@pytest.fixture(scope="module")
def chest(chest_dicom_series):
    return read_dicom_series(chest_dicom_series)


@pytest.fixture(scope="module")
def chest_mask(chest):
    """Bone and lung by Hounsfield thresholds: two labels with real, irregular shapes."""
    hu = chest.volume.array
    array = np.zeros(hu.shape, dtype=np.uint8)
    array[hu > 200] = 1
    array[(hu > -950) & (hu < -500)] = 2
    assert np.count_nonzero(array == 1) > 1000 and np.count_nonzero(array == 2) > 1000
    return chest.volume.with_array(array, labels=LABELS)


@pytest.fixture(scope="module")
def seg_path(chest, chest_mask, tmp_path_factory):
    return write_dicom_seg(chest_mask, chest.datasets, tmp_path_factory.mktemp("seg") / "mask.dcm")


def test_dicom_seg_reads_back_to_the_same_mask(chest, chest_mask, seg_path):
    back = read_label_map(seg_path, chest.volume, chest.datasets)
    assert back.shape == chest_mask.shape
    assert {value: name for value, name in back.labels.items() if value} == {1: "bone", 2: "lung",
                                                                              3: "nodule"}
    np.testing.assert_array_equal(back.array, chest_mask.array)


def test_dicom_seg_references_the_source_series_and_every_slice(chest, seg_path):
    seg = hd.seg.segread(seg_path)
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == chest.datasets[0].SeriesInstanceUID
    instances = seg.ReferencedSeriesSequence[0].ReferencedInstanceSequence
    referenced = {item.ReferencedSOPInstanceUID for item in instances}
    assert referenced == {ds.SOPInstanceUID for ds in chest.datasets}
    assert seg.StudyInstanceUID == chest.datasets[0].StudyInstanceUID
    assert seg.SeriesInstanceUID != chest.datasets[0].SeriesInstanceUID
    assert seg.FrameOfReferenceUID == chest.datasets[0].FrameOfReferenceUID


def test_every_label_is_a_described_segment_even_when_empty(chest, seg_path):
    seg = hd.seg.segread(seg_path)
    assert seg.segment_numbers == [1, 2, 3]
    described = [seg.get_segment_description(number) for number in seg.segment_numbers]
    assert [d.SegmentLabel for d in described] == ["bone", "lung", "nodule"]
    assert {d.SegmentAlgorithmType for d in described} == {"AUTOMATIC"}
    assert described[0].SegmentationAlgorithmIdentificationSequence[0].AlgorithmName == "FedSeg Workbench"
    assert seg.NumberOfFrames == 3 * len(chest.datasets)  # one frame per source slice and segment
    assert seg.Manufacturer == "FedSeg Workbench"


def test_a_series_without_slice_thickness_is_exported_and_left_untouched(chest, chest_mask, tmp_path):
    """Many tools omit SliceThickness, which highdicom needs; the export fills it in on a copy."""
    headers = []
    for ds in chest.datasets:
        header = Dataset()
        header.update(ds)
        del header.SliceThickness
        headers.append(header)
    path = write_dicom_seg(chest_mask, headers, tmp_path / "thin.dcm")
    assert all("SliceThickness" not in header for header in headers)
    np.testing.assert_array_equal(read_label_map(path, chest.volume, headers).array, chest_mask.array)


def test_a_mask_that_does_not_fit_the_series_is_refused(chest, chest_mask, tmp_path):
    with pytest.raises(GeometryMismatchError, match="differs from the source series"):
        write_dicom_seg(chest_mask, chest.datasets[1:], tmp_path / "short.dcm")
    with pytest.raises(GeometryMismatchError, match="first slice"):
        write_dicom_seg(chest_mask, chest.datasets[::-1], tmp_path / "reversed.dcm")


def test_labels_must_name_every_value_and_count_from_one(chest, chest_mask, tmp_path):
    with pytest.raises(FedSegError, match=r"values \[2\] that have no label name"):
        write_dicom_seg(chest_mask, chest.datasets, tmp_path / "x.dcm", labels={0: "background", 1: "bone"})
    with pytest.raises(FedSegError, match="numbered 1..N"):
        write_dicom_seg(chest_mask, chest.datasets, tmp_path / "x.dcm", labels={0: "bg", 1: "a", 5: "b"})


def test_reading_a_seg_that_is_not_one_or_of_other_images_fails_clearly(chest, seg_path, tmp_path):
    not_dicom = tmp_path / "notes.dcm"
    not_dicom.write_text("not a DICOM file")
    with pytest.raises(NotDicomError):
        read_label_map(not_dicom, chest.volume, chest.datasets)
    stranger = Dataset()
    stranger.SOPInstanceUID = hd.UID()
    with pytest.raises(GeometryMismatchError):
        read_label_map(seg_path, chest.volume, [stranger])
