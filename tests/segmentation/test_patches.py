"""Patch batches: the plan's patch size, foreground oversampling, padding, seeded epochs."""

import numpy as np
import pytest
import torch

from segmentation.case_cache import CachedCase
from segmentation.errors import DatasetError
from segmentation.patches import PatchDataset, make_loader


def cached(shape=(6, 40, 48), block=(slice(2, 3), slice(30, 34), slice(40, 44)), name="a") -> CachedCase:
    """An image whose value is its own flat voxel index (so a patch shows where it was cut), with a
    small labelled block."""
    image = np.arange(np.prod(shape), dtype=np.float32).reshape(shape) + 1.0
    label = np.zeros(shape, np.uint8)
    label[block] = 1
    return CachedCase(name, "ct", image, label)


def test_2d_patches_are_single_slices_of_the_plans_size():
    dataset = PatchDataset([cached()], (16, 16), batch_size=4, foreground_oversampling=0.0)
    images, labels, modalities = dataset[0]
    assert images.shape == (4, 1, 16, 16) and labels.shape == (4, 1, 16, 16)
    assert images.dtype == torch.float32 and labels.dtype == torch.uint8 and modalities == ["ct"] * 4
    # 6 slices of 40 x 48 over 16 x 16 patches: 6 x round(1920 / 256 = 7.5) = 48 patches, 12 batches.
    assert dataset.samples_per_epoch == 48 and len(dataset) == 12
    odd = PatchDataset([cached()], (16, 16), batch_size=5, foreground_oversampling=0.0)
    assert len(odd) == 10 and odd[9][0].shape[0] == 3  # the last batch holds the remaining patches
    for patch in images[:, 0]:  # a real cut: consecutive columns and rows of one slice, zero past its edge
        values = patch.numpy()
        rows, columns = np.flatnonzero(values.any(axis=1)), np.flatnonzero(values.any(axis=0))
        inside = values[rows[0]:rows[-1] + 1, columns[0]:columns[-1] + 1]
        assert np.all(inside > 0) and (values > 0).sum() == inside.size
        assert np.all(np.diff(inside, axis=1) == 1) and np.all(np.diff(inside, axis=0) == 48)


def test_3d_patches_have_depth():
    dataset = PatchDataset([cached()], (4, 16, 16), batch_size=2, foreground_oversampling=0.0)
    images, labels, _ = dataset[0]
    assert images.shape == (2, 1, 4, 16, 16) and labels.shape == (2, 1, 4, 16, 16)
    slices = images[0, 0].numpy().reshape(4, -1)
    kept = slices.any(axis=1)
    assert np.all(np.diff(slices[kept][:, slices[kept].all(axis=0)], axis=0) == 40 * 48)


def test_foreground_oversampling_centres_patches_on_labelled_voxels():
    def share_with_foreground(oversampling: float) -> float:
        dataset = PatchDataset([cached()], (8, 8), batch_size=50, foreground_oversampling=oversampling)
        dataset.set_epoch_seed(3)
        labels = torch.cat([dataset[i][1] for i in range(len(dataset))])
        return float((labels.flatten(1).amax(dim=1) > 0).float().mean())

    # The block is 16 voxels of one slice in 11,520: random patches almost never hold it.
    assert share_with_foreground(1.0) == 1.0
    assert share_with_foreground(0.0) < 0.1
    assert 0.2 < share_with_foreground(1 / 3) < 0.5


def test_a_case_smaller_than_the_patch_is_zero_padded():
    small = cached(shape=(2, 6, 5), block=(slice(0, 1), slice(2, 4), slice(1, 3)))
    dataset = PatchDataset([small], (8, 8), batch_size=4, foreground_oversampling=1.0)
    images, labels, _ = dataset[0]
    assert images.shape == (2, 1, 8, 8)  # one patch per slice
    for image, label in zip(images[:, 0], labels[:, 0], strict=True):
        assert int((image > 0).sum()) == 30  # the whole 6 x 5 slice, the rest padding
        assert int(label.sum()) == 4 and not label[image == 0].any()


def test_epochs_are_seeded_and_workers_do_not_change_them():
    dataset = PatchDataset([cached(), cached(name="b")], (16, 16), batch_size=8, foreground_oversampling=0.5)

    def epoch(seed: int, workers: int = 0) -> torch.Tensor:
        dataset.set_epoch_seed(seed)
        return torch.cat([images for images, _, _ in make_loader(dataset, num_workers=workers)])

    first = epoch(1)
    assert torch.equal(epoch(1), first) and not torch.equal(epoch(2), first)
    assert torch.equal(epoch(1, workers=2), first)
    state = torch.get_rng_state()
    epoch(1)
    assert torch.equal(torch.get_rng_state(), state)  # torch's global generator is left alone


def test_no_cases_is_a_dataset_error():
    with pytest.raises(DatasetError, match="no labelled training cases"):
        PatchDataset([], (8, 8), batch_size=2, foreground_oversampling=0.3)
