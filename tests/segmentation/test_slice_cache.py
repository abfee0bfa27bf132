"""The slice cache: preprocess once, reload from disk, invalidate on change; batched dataset access."""

import os

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from segmentation.datalist import CaseEntry
from segmentation.errors import DatasetError
from segmentation.preprocessing import Preprocessing, image_to_slices
from segmentation.slice_cache import SliceCache, SliceDataset, make_loader

SETTINGS = Preprocessing(image_size=(16, 16))


def _write_case(folder, name: str, depth: int = 5) -> CaseEntry:
    """A (depth, 20, 24) image whose label covers a block in every slice but the first."""
    rng = np.random.default_rng(len(name))
    image = rng.normal(100.0, 20.0, (depth, 20, 24)).astype(np.float32)
    label = np.zeros((depth, 20, 24), np.uint8)
    label[1:, 5:15, 6:18] = 1
    label[-1, 8:12, 8:12] = 2
    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    for kind, array in (("image", image), ("label", label)):
        paths[kind] = folder / f"{name}_{kind}.nii.gz"
        sitk.WriteImage(sitk.GetImageFromArray(array), str(paths[kind]))
    return CaseEntry(image=paths["image"], label=paths["label"], modality="ct", case_id=name)


@pytest.fixture
def case(tmp_path):
    return _write_case(tmp_path / "data", "case_a")


def test_second_load_is_served_from_disk_with_identical_samples(case, tmp_path):
    cache = SliceCache(tmp_path / "cache", SETTINGS)
    first = cache.load(case)
    assert (cache.hits, cache.misses) == (0, 1)
    assert first.images.shape == (5, 1, 16, 16) and first.images.dtype == np.float32
    assert first.labels.shape == (5, 1, 16, 16) and first.labels.dtype == np.uint8
    image = sitk.GetArrayFromImage(sitk.ReadImage(str(case.image)))
    np.testing.assert_allclose(first.images, image_to_slices(image, SETTINGS).numpy(), atol=1e-6)

    again = SliceCache(tmp_path / "cache", SETTINGS)  # a new process would see the same files
    second = again.load(case)
    assert (again.hits, again.misses) == (1, 0)
    assert isinstance(second.images, np.memmap)
    np.testing.assert_array_equal(second.images, first.images)
    np.testing.assert_array_equal(second.labels, first.labels)
    assert sorted(p.suffix for p in (tmp_path / "cache").iterdir()) == [".npy", ".npy"]  # no temp files


def test_changed_settings_or_files_are_never_served_stale(case, tmp_path):
    cache = SliceCache(tmp_path / "cache", SETTINGS)
    cache.load(case)
    SliceCache(tmp_path / "cache", Preprocessing(image_size=(8, 8))).load(case)
    os.utime(case.image, ns=(0, 10**18))  # an edited file gets a new mtime
    cache.load(case)
    assert (cache.hits, cache.misses) == (0, 2)


def test_dataset_gathers_batches_and_drops_mostly_empty_slices(tmp_path):
    cases = [_write_case(tmp_path / "data", name) for name in ("a", "bb")]
    cache = SliceCache(tmp_path / "cache", SETTINGS)
    everything = SliceDataset.from_cases(cases, cache)
    assert len(everything) == 10
    image, label, modality = everything[3]
    assert image.shape == (1, 16, 16) and label.shape == (1, 16, 16) and modality == "ct"
    images, labels, modalities = everything[[0, 7, 9]]
    assert images.shape == (3, 1, 16, 16) and labels.dtype == torch.uint8 and modalities == ["ct"] * 3
    torch.testing.assert_close(images[1], everything[7][0])

    labelled = SliceDataset.from_cases(cases, cache, min_foreground_fraction=0.1)
    assert len(labelled) == 8  # the empty first slice of each case is gone
    assert all(labelled[i][1].any() for i in range(len(labelled)))
    with pytest.raises(DatasetError, match="lower the fraction"):
        SliceDataset.from_cases(cases, cache, min_foreground_fraction=0.99)


def test_loader_yields_seeded_shuffled_batches_covering_every_sample(tmp_path):
    dataset = SliceDataset(
        torch.arange(10, dtype=torch.float32).view(10, 1, 1, 1), torch.zeros(10, 1, 1, 1, dtype=torch.uint8),
        ["ct"] * 10,
    )

    def order(seed: int) -> list[list[int]]:
        loader = make_loader(dataset, batch_size=4, generator=torch.Generator().manual_seed(seed))
        return [images.flatten().int().tolist() for images, _, _ in loader]

    batches = order(0)
    assert [len(b) for b in batches] == [4, 4, 2]
    assert sorted(sum(batches, [])) == list(range(10))
    assert order(0) == batches and order(1) != batches


def test_unlabelled_or_missing_cases_are_dataset_errors(case, tmp_path):
    cache = SliceCache(tmp_path / "cache", SETTINGS)
    with pytest.raises(DatasetError, match="no label"):
        cache.load(CaseEntry(image=case.image, label=None, modality="ct", case_id="x"))
    with pytest.raises(DatasetError, match="does not exist"):
        cache.load(CaseEntry(image=tmp_path / "gone.nii.gz", label=case.label, modality="ct", case_id="x"))
    with pytest.raises(DatasetError, match="no labelled training cases"):
        SliceDataset.from_cases([], cache)
