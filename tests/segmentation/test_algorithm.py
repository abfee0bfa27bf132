"""SegmentationAlgorithm: training, evaluation, weights, FedProx, checkpoints and resume, on tiny data.

The task is trivially learnable (a bright disk on a noisy background is label 1) so a few steps of
a (8, 16) U-Net on 32x32 slices show real learning in well under a second per epoch.
"""

from dataclasses import replace

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from segmentation.algorithm import SegmentationAlgorithm
from segmentation.checkpoint import load_checkpoint, save_checkpoint
from segmentation.datalist import load_dataset, write_dataset_json
from segmentation.errors import CheckpointError, ConfigError
from segmentation.events import EventWriter
from segmentation.plan import Plan
from segmentation.settings import NetworkConfig, TrainingConfig
from segmentation.volume import Volume

LABELS = {0: "background", 1: "disk"}


@pytest.fixture(autouse=True)
def one_torch_thread():
    """These tensors are tiny: one thread avoids oversubscribing the shared CPU cores (5x faster)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def _disk_case(rng: np.random.Generator, depth: int = 4, size: int = 32) -> tuple[np.ndarray, np.ndarray]:
    y, x = np.mgrid[:size, :size]
    label = np.zeros((depth, size, size), np.uint8)
    for z in range(depth):
        cy, cx, radius = rng.uniform(10, 22), rng.uniform(10, 22), rng.uniform(4, 8)
        label[z] = (y - cy) ** 2 + (x - cx) ** 2 <= radius**2
    image = 100.0 * label + rng.normal(0.0, 10.0, label.shape)
    return image.astype(np.float32), label


def write_disk_dataset(root, training: int, test: int, seed: int = 0, depth: int = 4, size: int = 32):
    """An MSD-style folder of NIfTI disk phantoms with anisotropic spacing."""
    rng = np.random.default_rng(seed)
    pairs = {"training": [], "test": []}
    for split, count in (("training", training), ("test", test)):
        for index in range(count):
            image, label = _disk_case(rng, depth, size)
            name = f"disk_{split}_{index:02d}.nii.gz"
            for folder, array in (("images", image), ("labels", label)):
                volume = sitk.GetImageFromArray(array)
                volume.SetSpacing((0.8, 0.8, 2.5))
                (root / folder).mkdir(parents=True, exist_ok=True)
                sitk.WriteImage(volume, str(root / folder / name))
            pairs[split].append((f"images/{name}", f"labels/{name}"))
    write_dataset_json(root, name="disks", modality="ct", labels=LABELS, training=pairs["training"],
                       test=pairs["test"])
    return load_dataset(root)


@pytest.fixture(scope="module")
def disks(tmp_path_factory):
    return write_disk_dataset(tmp_path_factory.mktemp("disks"), training=4, test=1)


def disk_plan(patch_size=(32, 32), labels=LABELS) -> Plan:
    """The disks' own spacing, whole slices (2D) or a part of the volume (3D) per patch."""
    return Plan(labels=labels, spatial_dims=len(patch_size), target_spacing=(0.8, 0.8, 2.5),
                patch_size=patch_size)


def _config(tmp_path, **changes) -> TrainingConfig:
    config = TrainingConfig(
        plan=disk_plan(), network=NetworkConfig(out_channels=2, channels=(8, 16)), augmentation="none",
        learning_rate=1e-2, batch_size=4, cache_dir=tmp_path / "cache",
    )
    return replace(config, **changes)


def _parameters(algorithm: SegmentationAlgorithm) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in algorithm.model.parameters()])


def test_training_reduces_the_loss_emits_events_and_learns_the_task(disks, tmp_path):
    global_rng = torch.get_rng_state()
    algorithm = SegmentationAlgorithm(_config(tmp_path), device="cpu")
    seen = []
    result = algorithm.train(disks, epochs=3, events=EventWriter(None, "t", (seen.append,)),
                             validation=disks.test)
    assert torch.equal(torch.get_rng_state(), global_rng)  # own seeded generators only
    losses = [record["loss"] for record in algorithm.history]
    assert losses[-1] < 0.7 * losses[0]
    assert result.epochs == result.epoch == 3 and not result.stopped
    assert result.num_examples == 16  # 4 cases x 4 slices, each slice one 32 x 32 patch
    progress = [e for e in seen if e["kind"] == "progress"]
    assert len(progress) == 3 * 4
    assert {k: progress[-1][k] for k in ("epoch", "epochs", "step", "steps")} == {
        "epoch": 3, "epochs": 3, "step": 4, "steps": 4}
    epochs = [e for e in seen if e["kind"] == "epoch"]
    assert [e["epoch"] for e in epochs] == [1, 2, 3] and "dice/disk" in epochs[-1]["metrics"]
    assert result.metrics["dice"] > 0.7
    evaluation = algorithm.evaluate(disks.test)
    assert evaluation.cases[0].case_id and set(evaluation.label_dice) == {"disk"}
    assert evaluation.dice == pytest.approx(result.metrics["dice"])


def test_training_is_seeded_and_a_resumed_run_matches_an_uninterrupted_one(disks, tmp_path):
    config = _config(tmp_path, augmentation="gin")
    cases = disks.training[:2]
    straight = SegmentationAlgorithm(config, device="cpu")
    straight.train(cases, epochs=2)

    first = SegmentationAlgorithm(config, device="cpu")
    first.train(cases, epochs=1)
    save_checkpoint(first.to_checkpoint(), tmp_path / "model.pt")
    resumed = SegmentationAlgorithm.from_checkpoint(load_checkpoint(tmp_path / "model.pt"), device="cpu")
    assert resumed.epoch == 1 and resumed.history == first.history
    seen = []
    resumed.train(cases, epochs=1, events=EventWriter(None, "t", (seen.append,)))
    assert {e["epoch"] for e in seen} == {2} and seen[0]["epochs"] == 2
    torch.testing.assert_close(_parameters(resumed), _parameters(straight), rtol=1e-4, atol=1e-5)
    assert [r["epoch"] for r in resumed.history] == [1, 2]


def test_stop_abandons_the_epoch_after_the_requested_step(disks, tmp_path):
    algorithm = SegmentationAlgorithm(_config(tmp_path), device="cpu")
    calls = []
    result = algorithm.train(disks, epochs=3, stop=lambda: calls.append(1) or len(calls) > 2)
    assert result.stopped and result.epochs == 0 and algorithm.epoch == 0 and algorithm.history == []
    assert len(calls) == 3  # checked before each step: two steps ran, the third was refused


def test_weights_round_trip_as_copies_and_wrong_ones_are_refused(disks, tmp_path):
    source = SegmentationAlgorithm(_config(tmp_path, seed=1), device="cpu")
    target = SegmentationAlgorithm(_config(tmp_path, seed=2), device="cpu")
    weights = source.get_weights()
    assert len(weights) == len(source.model.state_dict())  # parameters and buffers
    target.set_weights(weights)
    torch.testing.assert_close(_parameters(target), _parameters(source))
    weights[0] += 1.0  # the arrays are copies: editing them changes neither model
    torch.testing.assert_close(_parameters(target), _parameters(source))

    before = _parameters(target)
    with pytest.raises(ConfigError, match="expected .* weight arrays"):
        target.set_weights(weights[:-1])
    with pytest.raises(ConfigError, match="shape"):
        target.set_weights([np.zeros((3, 3), np.float32), *weights[1:]])
    torch.testing.assert_close(_parameters(target), before)  # nothing was half-loaded


def test_optimizer_state_travels_as_arrays_and_a_misfit_changes_nothing(disks, tmp_path):
    trained = SegmentationAlgorithm(_config(tmp_path), device="cpu")
    trained.train(disks.training[:2], epochs=1)
    arrays = trained.optimizer_arrays()
    assert arrays and all(isinstance(array, np.ndarray) for array in arrays.values())
    fresh = SegmentationAlgorithm(_config(tmp_path), device="cpu")
    assert fresh.load_optimizer_arrays(arrays)
    for index, slots in trained.optimizer.state_dict()["state"].items():
        for slot, value in slots.items():
            torch.testing.assert_close(fresh.optimizer.state_dict()["state"][index][slot], value)

    other = SegmentationAlgorithm(_config(tmp_path, network=NetworkConfig(out_channels=2, channels=(4, 8))),
                                  device="cpu")
    assert not other.load_optimizer_arrays(arrays)
    assert not other.load_optimizer_arrays({"no/such": np.zeros(1)})
    assert not other.load_optimizer_arrays({})
    assert other.optimizer.state_dict()["state"] == {}


def test_fedprox_term_pulls_the_update_towards_the_starting_weights(disks, tmp_path):
    drifts = {}
    for mu in (0.0, 50.0):
        algorithm = SegmentationAlgorithm(_config(tmp_path, proximal_mu=mu), device="cpu")
        start = _parameters(algorithm)
        algorithm.train(disks.training[:2], epochs=1)
        drifts[mu] = float(torch.linalg.vector_norm(_parameters(algorithm) - start))
    assert drifts[50.0] < 0.9 * drifts[0.0]


def test_dsn_fits_modality_statistics_that_travel_in_the_checkpoint(disks, tmp_path):
    algorithm = SegmentationAlgorithm(_config(tmp_path, augmentation="dsn"), device="cpu")
    algorithm.train(disks, epochs=1)
    statistics = algorithm.config.plan.modality_statistics
    assert set(statistics["modalities"]) == {"ct"}
    assert 0.0 < statistics["modalities"]["ct"]["mean"] < 110.0
    save_checkpoint(algorithm.to_checkpoint(), tmp_path / "dsn.pt")
    checkpoint = load_checkpoint(tmp_path / "dsn.pt")
    assert checkpoint.plan.modality_statistics == statistics and checkpoint.train_modality == "ct"
    restored = SegmentationAlgorithm.from_checkpoint(checkpoint, device="cpu")
    image = Volume.from_sitk(sitk.ReadImage(str(disks.test[0].image)), modality="ct")
    np.testing.assert_array_equal(restored.predict(image), algorithm.predict(image))


def test_a_3d_network_trains_on_patches_and_predicts_in_native_size(disks, tmp_path):
    config = _config(
        tmp_path, network=NetworkConfig(spatial_dims=3, out_channels=2, channels=(4, 8)),
        plan=disk_plan((4, 16, 16)), batch_size=2,
    )
    algorithm = SegmentationAlgorithm(config, device="cpu")
    result = algorithm.train(disks, epochs=1)
    assert result.num_examples >= 4 and np.isfinite(result.loss)  # at least a patch per case
    image = Volume(np.zeros((4, 40, 24), np.float32), spacing=(0.8, 0.8, 2.5))
    assert algorithm.predict(image).shape == (4, 40, 24)
    assert len(algorithm.evaluate(disks.test).cases) == 1


def test_bad_settings_and_checkpoints_are_typed_errors(tmp_path):
    with pytest.raises(ConfigError, match="labels"):
        SegmentationAlgorithm(_config(tmp_path, plan=disk_plan(labels={0: "background", 2: "disk"})),
                              device="cpu")
    with pytest.raises(ConfigError, match="multiples of 2"):
        _config(tmp_path, plan=disk_plan((31, 31)))
    with pytest.raises(ConfigError, match="augmentation"):
        _config(tmp_path, augmentation="sharpen")
    checkpoint = SegmentationAlgorithm(_config(tmp_path), device="cpu").to_checkpoint()
    with pytest.raises(ConfigError, match="network"):
        SegmentationAlgorithm.from_checkpoint(checkpoint, network=NetworkConfig())
    checkpoint.state_dict = {k: v[..., :1] for k, v in checkpoint.state_dict.items()}
    with pytest.raises(CheckpointError, match="does not fit"):
        SegmentationAlgorithm.from_checkpoint(checkpoint, device="cpu")
