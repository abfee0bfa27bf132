"""Inference: the plan's canonical grid in, sliding windows, the mask back on the input's own grid.

Expected masks come from the input itself: a stand-in network that labels bright voxels must find
exactly the bright block the test painted, whatever the storage, spacing or size of the study.
"""

import numpy as np
import pytest
import torch

from segmentation.checkpoint import Checkpoint
from segmentation.errors import CheckpointError, GeometryError
from segmentation.inference import label_volumes_ml, predict_volume, segment
from segmentation.plan import Plan
from segmentation.preprocessing import normalize_intensity
from segmentation.settings import NetworkConfig
from segmentation.transforms.dsn import IntensityStatistics, ModalityStatistics
from segmentation.volume import Volume

LABELS = {0: "background", 1: "liver", 2: "spleen"}
# A 30 degree rotation about z: rows and columns of the direction matrix are not the axes.
COS, SIN = np.cos(np.pi / 6), np.sin(np.pi / 6)
ROTATED = (COS, -SIN, 0.0, SIN, COS, 0.0, 0.0, 0.0, 1.0)


def make_plan(spatial_dims: int = 2, spacing=(0.7, 1.3, 4.0), patch=None) -> Plan:
    patch = patch or ((16, 16) if spatial_dims == 2 else (4, 16, 16))
    return Plan(labels=LABELS, spatial_dims=spatial_dims, target_spacing=spacing, patch_size=patch)


def make_checkpoint(spatial_dims: int = 2, winner: int | None = None, seed: int = 0) -> Checkpoint:
    """A tiny checkpoint; with `winner`, every weight is zero and only the last bias picks that label."""
    torch.manual_seed(seed)
    network = NetworkConfig(spatial_dims=spatial_dims, out_channels=3, channels=(4, 8))
    state = network.build().state_dict()
    if winner is not None:
        state = {name: torch.zeros_like(value) for name, value in state.items()}
        last_bias = [name for name in state if name.endswith("bias")][-1]
        state[last_bias][winner] = 5.0
    return Checkpoint(network=network, plan=make_plan(spatial_dims), state_dict=state)


def make_volume(shape=(5, 20, 28), direction=ROTATED) -> Volume:
    """Non-square, anisotropic, rotated, off-origin: any geometry slip shows."""
    rng = np.random.default_rng(7)
    array = rng.normal(0.0, 1.0, shape).astype(np.float32)
    array[:, 5:12, 8:20] += 4.0  # a bright block gives the random network something to react to
    return Volume(array, spacing=(0.7, 1.3, 4.0), origin=(-12.5, 40.0, 7.25), direction=direction,
                  modality="ct")


class BrightVoxels(torch.nn.Module):
    """Stands in for a network: label 1 where the normalized input is above one half, else 0."""

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        return torch.cat([torch.full_like(inputs, 0.5), inputs, torch.full_like(inputs, -1.0)], dim=1)


def block_study(shape, spacing, direction=(1.0, 0, 0, 0, 1.0, 0, 0, 0, 1.0)) -> tuple[Volume, np.ndarray]:
    """Air (0), a dim block (300) and inside it a bright block (1000): the bright one is the answer."""
    array = np.zeros(shape, np.float32)
    z, y, x = shape
    array[1:z - 1, y // 5: 4 * y // 5, x // 6: 5 * x // 6] = 300.0
    array[2:z - 1, y // 4: y // 2, x // 3: 2 * x // 3] = 1000.0
    return Volume(array, spacing=spacing, origin=(3.0, -7.0, 11.0), direction=direction), array == 1000.0


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * np.logical_and(a, b).sum() / (a.sum() + b.sum())


# Storages as direction matrices: LPS, RAS (x, y flipped), sagittal slices (PIR), coronal (LIP).
STORAGES = {
    "LPS": (1, 0, 0, 0, 1, 0, 0, 0, 1),
    "RAS": (-1, 0, 0, 0, -1, 0, 0, 0, 1),
    "sagittal": (0, 0, -1, 1, 0, 0, 0, -1, 0),
    "coronal": (1, 0, 0, 0, 0, -1, 0, 1, 0),
}


@pytest.mark.parametrize("spatial_dims", [2, 3])
@pytest.mark.parametrize("storage", list(STORAGES))
def test_the_bright_block_is_found_on_the_inputs_grid_whatever_the_storage(spatial_dims, storage):
    direction = tuple(float(v) for v in STORAGES[storage])
    study, expected = block_study((12, 40, 36), (1.0, 1.5, 2.0), direction)
    # Each stored axis at its own spacing: the canonical grid reorders them and resamples nothing.
    axes = np.abs(np.asarray(direction).reshape(3, 3)).argmax(axis=1)
    plan = make_plan(spatial_dims, spacing=tuple(study.spacing[a] for a in axes),
                     patch=(16, 16) if spatial_dims == 2 else (8, 16, 16))
    mask = segment(BrightVoxels(), study, plan, torch.device("cpu"), batch_size=4)
    assert mask.shape == study.shape
    np.testing.assert_array_equal(mask == 1, expected)


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_sliding_windows_cover_a_study_many_patches_large(spatial_dims):
    study, expected = block_study((20, 90, 70), (0.8, 0.8, 2.5))
    patch = (16, 16) if spatial_dims == 2 else (8, 16, 16)
    plan = make_plan(spatial_dims, spacing=(0.8, 0.8, 2.5), patch=patch)
    mask = segment(BrightVoxels(), study, plan, torch.device("cpu"), batch_size=4)
    np.testing.assert_array_equal(mask == 1, expected)


def test_another_target_spacing_or_an_oblique_study_still_lands_the_mask_on_the_input():
    study, expected = block_study((12, 60, 48), (0.8, 0.8, 2.5))
    resampled = segment(BrightVoxels(), study, make_plan(spacing=(1.6, 1.2, 2.5)), torch.device("cpu"))
    assert resampled.shape == study.shape and dice(resampled == 1, expected) > 0.9
    oblique, expected = block_study((12, 60, 48), (0.8, 0.8, 2.5), direction=ROTATED)
    mask = segment(BrightVoxels(), oblique, make_plan(spacing=(0.8, 0.8, 2.5)), torch.device("cpu"))
    assert mask.shape == oblique.shape and dice(mask == 1, expected) > 0.9


def test_unusable_geometry_is_refused_with_one_line():
    with pytest.raises(GeometryError, match="invalid voxel spacing"):
        segment(BrightVoxels(), make_volume().with_array(np.zeros((5, 20, 28)), spacing=(0.7, 0.0, 4.0)),
                make_plan(), torch.device("cpu"))
    with pytest.raises(GeometryError, match="3 voxels from left to right"):
        segment(BrightVoxels(), Volume(np.zeros((5, 20, 3)), spacing=(0.7, 1.3, 4.0)), make_plan(),
                torch.device("cpu"))


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_mask_has_the_input_geometry_and_the_checkpoint_labels(spatial_dims):
    volume = make_volume()
    mask = predict_volume(make_checkpoint(spatial_dims, winner=2), volume, device="cpu")
    assert mask.array.dtype == np.uint8
    assert mask.shape == volume.shape
    assert mask.geometry_differences(volume, tolerance=1e-9) == []
    assert mask.direction == ROTATED
    assert mask.labels == LABELS
    assert np.all(mask.array == 2)


def test_2d_progress_counts_canonical_slices_whatever_the_batch_size():
    seen = []
    predict_volume(make_checkpoint(seed=3), make_volume(direction=STORAGES["LPS"]), device="cpu",
                   batch_size=2, progress=lambda done, total: seen.append((done, total)))
    assert seen == [(2, 5), (4, 5), (5, 5)]


def test_domain_specific_normalization_uses_the_plans_modality_statistics():
    """A CT volume is z-scored with the CT statistics the plan carries from training."""
    statistics = ModalityStatistics({"ct": IntensityStatistics(mean=100.0, std=20.0, voxels=1000)})
    plan = Plan(labels=LABELS, spatial_dims=2, target_spacing=(1, 1, 1), patch_size=(16, 16),
                modality_statistics=statistics.to_dict())
    np.testing.assert_allclose(normalize_intensity(np.full((2, 16, 16), 140.0), plan, "ct"), 2.0, rtol=1e-6)


def test_a_checkpoint_whose_labels_do_not_match_its_network_is_refused():
    checkpoint = make_checkpoint()
    checkpoint.network = NetworkConfig(out_channels=4, channels=(4, 8))
    with pytest.raises(CheckpointError, match="predicts 4 classes"):
        predict_volume(checkpoint, make_volume(), device="cpu")


def test_weights_of_another_network_are_a_checkpoint_error():
    checkpoint = make_checkpoint()
    checkpoint.state_dict = NetworkConfig(out_channels=3, channels=(8, 16)).build().state_dict()
    with pytest.raises(CheckpointError, match="do not fit its network"):
        predict_volume(checkpoint, make_volume(), device="cpu")


def test_label_volumes_are_voxel_counts_times_voxel_volume():
    array = np.zeros((4, 5, 6), dtype=np.uint8)
    array[0, :2, :5] = 1  # 10 voxels
    array[3, 4, :3] = 5  # 3 voxels of a value the mask does not name
    mask = Volume(array, spacing=(0.5, 2.0, 3.0), labels=LABELS)  # 3 mm^3 = 0.003 mL per voxel
    volumes = label_volumes_ml(mask)
    assert set(volumes) == {"liver", "spleen", "label 5"}
    assert volumes["liver"] == pytest.approx(0.03)
    assert volumes["spleen"] == 0.0
    assert volumes["label 5"] == pytest.approx(0.009)
