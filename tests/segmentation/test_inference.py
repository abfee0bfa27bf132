"""predict_volume and label_volumes_ml: masks in the input's geometry, the model's labels, volumes in mL."""

from dataclasses import replace

import numpy as np
import pytest
import torch

from segmentation.checkpoint import Checkpoint
from segmentation.errors import CheckpointError
from segmentation.inference import label_volumes_ml, model_input, predict_volume
from segmentation.network import NetworkConfig
from segmentation.preprocessing import Preprocessing, logits_to_label
from segmentation.transforms.dsn import IntensityStatistics, ModalityStatistics
from segmentation.volume import Volume

LABELS = {0: "background", 1: "liver", 2: "spleen"}
# A 30 degree rotation about z: rows and columns of the direction matrix are not the axes.
COS, SIN = np.cos(np.pi / 6), np.sin(np.pi / 6)
ROTATED = (COS, -SIN, 0.0, SIN, COS, 0.0, 0.0, 0.0, 1.0)


def make_checkpoint(spatial_dims: int = 2, winner: int | None = None, seed: int = 0) -> Checkpoint:
    """A tiny checkpoint; with `winner`, every weight is zero and only the last bias picks that label."""
    torch.manual_seed(seed)
    network = NetworkConfig(spatial_dims=spatial_dims, out_channels=3, channels=(4, 8))
    state = network.build().state_dict()
    if winner is not None:
        state = {name: torch.zeros_like(value) for name, value in state.items()}
        last_bias = [name for name in state if name.endswith("bias")][-1]
        state[last_bias][winner] = 5.0
    preprocessing = Preprocessing(image_size=(16, 16), depth=8)
    return Checkpoint(network=network, preprocessing=preprocessing, labels=LABELS, state_dict=state)


def make_volume(shape=(5, 20, 28)) -> Volume:
    """Non-square, anisotropic, rotated, off-origin: any geometry slip shows."""
    rng = np.random.default_rng(7)
    array = rng.normal(0.0, 1.0, shape).astype(np.float32)
    array[:, 5:12, 8:20] += 4.0  # a bright block gives the random network something to react to
    return Volume(array, spacing=(0.7, 1.3, 4.0), origin=(-12.5, 40.0, 7.25), direction=ROTATED,
                  modality="ct")


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


def test_2d_prediction_matches_running_the_network_by_hand_whatever_the_batch_size():
    checkpoint, volume = make_checkpoint(seed=3), make_volume()
    seen = []
    mask = predict_volume(checkpoint, volume, device="cpu", batch_size=2,
                          progress=lambda done, total: seen.append((done, total)))
    with torch.inference_mode():
        logits = checkpoint.build_model()(model_input(checkpoint, volume))
    expected = logits_to_label(logits, volume.shape)
    assert len(np.unique(expected)) > 1  # the comparison is not between two constant masks
    np.testing.assert_array_equal(mask.array, expected)
    assert seen == [(2, 5), (4, 5), (5, 5)]


def test_3d_prediction_runs_the_resized_volume_once_and_resizes_the_logits_back():
    checkpoint, volume = make_checkpoint(spatial_dims=3, seed=4), make_volume()
    mask = predict_volume(checkpoint, volume, device="cpu")
    inputs = model_input(checkpoint, volume)
    assert inputs.shape == (1, 1, 8, 16, 16)
    with torch.inference_mode():
        expected = logits_to_label(checkpoint.build_model()(inputs), volume.shape)
    assert len(np.unique(expected)) > 1
    np.testing.assert_array_equal(mask.array, expected)


def test_model_input_normalizes_with_the_checkpoints_modality_statistics():
    """Domain-specific normalization: a CT volume is z-scored with the CT statistics of training."""
    checkpoint = make_checkpoint()
    statistics = ModalityStatistics({"ct": IntensityStatistics(mean=100.0, std=20.0, voxels=1000)})
    checkpoint.preprocessing = replace(checkpoint.preprocessing, modality_statistics=statistics.to_dict())
    volume = make_volume().with_array(np.full((2, 16, 16), 140.0, dtype=np.float32))
    np.testing.assert_allclose(model_input(checkpoint, volume).numpy(), 2.0, rtol=1e-6)


def test_a_checkpoint_whose_labels_do_not_match_its_network_is_refused():
    checkpoint = make_checkpoint()
    checkpoint.labels = {0: "background", 1: "liver"}
    with pytest.raises(CheckpointError, match="predicts 3 classes"):
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
