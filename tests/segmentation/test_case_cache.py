"""The case cache: prepare once (canonical grid, normalized), reload from disk, invalidate on change."""

import os

import numpy as np
import pytest
import SimpleITK as sitk

from segmentation.case_cache import CaseCache
from segmentation.datalist import CaseEntry
from segmentation.errors import DatasetError, GeometryMismatchError
from segmentation.plan import Plan

LABELS = {0: "background", 1: "block", 2: "core"}
PLAN = Plan(labels=LABELS, spatial_dims=2, target_spacing=(1.0, 1.0, 3.0), patch_size=(16, 16))


def write_case(folder, name: str, spacing=(1.0, 1.0, 3.0), label_spacing=None) -> CaseEntry:
    """A (5, 20, 24) LPS image whose label covers a block in every slice but the first."""
    rng = np.random.default_rng(len(name))
    image = rng.normal(100.0, 20.0, (5, 20, 24)).astype(np.float32)
    label = np.zeros((5, 20, 24), np.uint8)
    label[1:, 5:15, 6:18] = 1
    label[-1, 8:12, 8:12] = 2
    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    for kind, array, own_spacing in (("image", image, spacing), ("label", label, label_spacing or spacing)):
        paths[kind] = folder / f"{name}_{kind}.nii.gz"
        volume = sitk.GetImageFromArray(array)
        volume.SetSpacing(own_spacing)
        sitk.WriteImage(volume, str(paths[kind]))
    return CaseEntry(image=paths["image"], label=paths["label"], modality="ct", case_id=name)


@pytest.fixture
def case(tmp_path):
    return write_case(tmp_path / "data", "case_a")


def test_second_load_is_served_from_disk_on_the_canonical_grid(case, tmp_path):
    cache = CaseCache(tmp_path / "cache", PLAN)
    first = cache.load(case)
    assert (cache.hits, cache.misses) == (0, 1)
    assert first.image.shape == (5, 20, 24) and first.image.dtype == np.float32
    assert 0.0 <= first.image.min() and first.image.max() <= 1.0
    # Stored LPS (identity direction), canonical RAS: x and y run the other way, z stays.
    label = sitk.GetArrayFromImage(sitk.ReadImage(str(case.label)))
    np.testing.assert_array_equal(first.label, label[:, ::-1, ::-1])

    again = CaseCache(tmp_path / "cache", PLAN)  # a new process would see the same files
    second = again.load(case)
    assert (again.hits, again.misses) == (1, 0)
    assert isinstance(second.image, np.memmap)
    np.testing.assert_array_equal(second.image, first.image)
    assert sorted(p.suffix for p in (tmp_path / "cache").iterdir()) == [".npy", ".npy"]  # no temp files


def test_a_coarser_target_spacing_resamples_and_labels_stay_labels(case, tmp_path):
    coarse = Plan(labels=LABELS, spatial_dims=2, target_spacing=(2.0, 2.0, 3.0), patch_size=(8, 8))
    cached = CaseCache(tmp_path / "cache", coarse).load(case)
    # 24 x 20 voxels of 1 mm, centre to centre 23 and 19 mm: 2 mm steps give 13 x 11 (z kept in 2D).
    assert cached.label.shape == (5, 11, 13)
    assert set(np.unique(cached.label)) == {0, 1, 2}  # nearest neighbour: no blended label values


def test_changed_plan_or_files_are_never_served_stale(case, tmp_path):
    cache = CaseCache(tmp_path / "cache", PLAN)
    cache.load(case)
    other_patch = Plan(labels=LABELS, spatial_dims=2, target_spacing=(1.0, 1.0, 3.0), patch_size=(8, 8))
    assert CaseCache(tmp_path / "cache", other_patch).key(case) == cache.key(case)  # patches cut later
    CaseCache(tmp_path / "cache", Plan(labels=LABELS, spatial_dims=2, target_spacing=(2.0, 2.0, 3.0),
                                       patch_size=(16, 16))).load(case)
    os.utime(case.image, ns=(0, 10**18))  # an edited file gets a new mtime
    cache.load(case)
    assert (cache.hits, cache.misses) == (0, 2)


def test_an_edited_file_inside_a_dicom_series_folder_changes_the_key(case, tmp_path):
    series = tmp_path / "series"
    series.mkdir()
    (series / "slice1.dcm").write_bytes(b"one")
    entry = CaseEntry(image=series, label=case.label, modality="ct", case_id="s")
    cache = CaseCache(tmp_path / "cache", PLAN)
    before = cache.key(entry)
    os.utime(series / "slice1.dcm", ns=(0, 10**18))
    assert cache.key(entry) != before


def test_unlabelled_missing_or_misaligned_cases_are_errors(case, tmp_path):
    cache = CaseCache(tmp_path / "cache", PLAN)
    with pytest.raises(DatasetError, match="no label"):
        cache.load(CaseEntry(image=case.image, label=None, modality="ct", case_id="x"))
    with pytest.raises(DatasetError, match="does not exist"):
        cache.load(CaseEntry(image=tmp_path / "gone.nii.gz", label=case.label, modality="ct", case_id="x"))
    shifted = write_case(tmp_path / "data", "case_b", label_spacing=(1.0, 1.0, 2.0))
    with pytest.raises(GeometryMismatchError, match="case_b_image.*case_b_label.*spacing"):
        cache.load(shifted)
