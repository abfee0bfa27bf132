"""MONAI bundle export: MONAI's own bundle runner segments a study as `fedseg predict` does.

Briefly trained models (2D and 3D, on phantom CTs) are exported and the bundle run with
monai.bundle.run on held-out phantom cases stored other ways (flipped, permuted, at another spacing).
The reference mask comes from fedseg's own inference path (predict_volume), the bundle's from MONAI's
transforms and inferers; Dice is counted here.
"""

from __future__ import annotations

import json
import sys
from dataclasses import replace
from pathlib import Path

import monai
import numpy as np
import pytest
import torch
from monai.bundle import ConfigWorkflow, run, verify_net_in_out

from segmentation.algorithm import SegmentationAlgorithm
from segmentation.bundle import CONFIG_PATH, METADATA_PATH, MODEL_PATH, export_bundle
from segmentation.bundle_transforms import Evaluator
from segmentation.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from segmentation.errors import CheckpointError, ConfigError
from segmentation.fingerprint import plan_for_cases
from segmentation.inference import predict_volume
from segmentation.io import read_volume, write_volume
from segmentation.plan import Plan
from segmentation.settings import NetworkConfig, TrainingConfig
from segmentation.synth import LABELS, PhantomGeometry, generate_dataset, phantom_case

SEED = 3
HELD_OUT = 7  # a phantom patient that no model here was trained on


def train_phantom_model(root: Path, spatial_dims: int, channels: tuple[int, ...], epochs: int) -> Path:
    """A U-Net trained for a few seconds on four phantom CTs: rough, but it labels several organs,
    which is all a comparison of two inference paths needs. Saved as a fedseg checkpoint."""
    dataset = generate_dataset(root / "ct", "ct", cases=4, seed=SEED, size=48 if spatial_dims == 2 else 32,
                               test_fraction=0.0)
    network = NetworkConfig(spatial_dims=spatial_dims, out_channels=len(LABELS), channels=channels)
    batch = 16 if spatial_dims == 2 else 2
    plan, _ = plan_for_cases(dataset.training, dataset.labels, network, batch_size=batch)
    config = TrainingConfig(plan=plan, network=network, augmentation="none", learning_rate=1e-2,
                            batch_size=batch, cache_dir=root / "cache")
    threads = torch.get_num_threads()
    torch.set_num_threads(2)  # a fixed summation order: the same model on every machine
    try:
        algorithm = SegmentationAlgorithm(config, device="cpu")
        algorithm.train(dataset, epochs)
    finally:
        torch.set_num_threads(threads)
    path = root / "model.pt"
    save_checkpoint(algorithm.to_checkpoint(), path)
    return path


@pytest.fixture(scope="module")
def model_2d(tmp_path_factory) -> Path:
    return train_phantom_model(tmp_path_factory.mktemp("model_2d"), 2, (8, 16, 32), epochs=60)


@pytest.fixture(scope="module")
def model_3d(tmp_path_factory) -> Path:
    return train_phantom_model(tmp_path_factory.mktemp("model_3d"), 3, (4, 8, 16), epochs=30)


def write_study(folder: Path, name: str, size: int, depth: int, geometry: PhantomGeometry) -> Path:
    image, _ = phantom_case(SEED, HELD_OUT, "ct", size, depth, geometry)
    return write_volume(image, folder / f"{name}.nii.gz")


def run_bundle(bundle: Path, studies: Path, out: Path, monkeypatch, **override) -> None:
    """MONAI's bundle runner, as `python -m monai.bundle run` calls it (it puts the bundle on sys.path)."""
    monkeypatch.setattr(sys, "path", list(sys.path))
    run(config_file=str(bundle / CONFIG_PATH), meta_file=str(bundle / METADATA_PATH),
        bundle_root=str(bundle), dataset_dir=str(studies), output_dir=str(out), **override)


def dice_by_label(a: np.ndarray, b: np.ndarray) -> dict[int, float]:
    """Dice of every label present in either map (counted here, independently)."""
    values = set(np.unique(a)) | set(np.unique(b))
    return {int(v): 2.0 * np.sum((a == v) & (b == v)) / (np.sum(a == v) + np.sum(b == v)) for v in values}


def assert_bundle_matches_fedseg(checkpoint: Checkpoint, study: Path, mask: Path, modality: str = "unknown"):
    image = read_volume(study)
    expected = predict_volume(checkpoint, image.with_array(image.array, modality=modality), device="cpu")
    written = read_volume(mask)
    assert written.array.dtype == np.uint8
    assert written.geometry_differences(image) == []  # back on the study's own grid
    assert len(set(np.unique(expected.array)) - {0}) >= 3  # several organs: a comparison worth making
    dice = dice_by_label(written.array, expected.array)
    assert min(dice.values()) >= 0.99, dice


@pytest.mark.slow
def test_monai_runs_a_2d_bundle_like_fedseg_predict(model_2d, tmp_path, monkeypatch):
    """Two storages in one run: x and y flipped (RAS) at a finer spacing than the plan's, and coronal
    slices (LIP) at another; the 2D plan keeps each study's slices as stored."""
    bundle = export_bundle(model_2d, tmp_path / "bundle")
    studies = tmp_path / "studies"
    ras = write_study(studies, "ras", 48, 12, PhantomGeometry("RAS", spacing=(5.5, 6.0, 12.5)))
    coronal = write_study(studies, "coronal", 48, 12, PhantomGeometry("LIP", spacing=(7.0, 7.5, 10.0)))
    run_bundle(bundle, studies, tmp_path / "masks", monkeypatch)
    checkpoint = load_checkpoint(model_2d)
    assert_bundle_matches_fedseg(checkpoint, ras, tmp_path / "masks" / "ras_seg.nii.gz")
    assert_bundle_matches_fedseg(checkpoint, coronal, tmp_path / "masks" / "coronal_seg.nii.gz")


@pytest.mark.slow
def test_monai_runs_a_3d_bundle_like_fedseg_predict(model_3d, tmp_path, monkeypatch):
    """Sagittal slices (PIR), resampled along every axis."""
    bundle = export_bundle(model_3d, tmp_path / "bundle")
    study = write_study(tmp_path / "studies", "sagittal", 32, 8, PhantomGeometry("PIR", spacing=(14, 13, 22)))
    run_bundle(bundle, study.parent, tmp_path / "masks", monkeypatch)
    assert_bundle_matches_fedseg(load_checkpoint(model_3d), study, tmp_path / "masks" / "sagittal_seg.nii.gz")


@pytest.mark.slow
def test_domain_specific_normalization_uses_the_modality_the_run_names(model_2d, tmp_path, monkeypatch):
    """A plan that z-scores CT with its statistics, chosen here so that the z-scores fall where the
    model's training window put the intensities; the run says the study is CT."""
    geometry = PhantomGeometry("RAS", spacing=(5.5, 6.0, 12.5))
    study = write_study(tmp_path / "studies", "study", 48, 12, geometry)
    low, high = np.percentile(read_volume(study).array, [0.5, 99.5])
    statistics = {"foreground_percentile": 5.0,
                  "modalities": {"ct": {"mean": float(low), "std": float(high - low), "voxels": 1000}}}
    checkpoint = load_checkpoint(model_2d)
    checkpoint.plan = replace(checkpoint.plan, modality_statistics=statistics)
    save_checkpoint(checkpoint, tmp_path / "dsn.pt")
    bundle = export_bundle(tmp_path / "dsn.pt", tmp_path / "bundle")
    run_bundle(bundle, study.parent, tmp_path / "masks", monkeypatch, modality="ct")
    assert_bundle_matches_fedseg(checkpoint, study, tmp_path / "masks" / "study_seg.nii.gz", modality="ct")


@pytest.fixture
def untrained_checkpoint(tmp_path) -> Path:
    torch.manual_seed(0)
    network = NetworkConfig(out_channels=3, channels=(4, 8))
    plan = Plan(labels={0: "background", 1: "liver", 2: "spleen"}, spatial_dims=2,
                target_spacing=(0.8, 0.9, 3.0), patch_size=(32, 48))
    path = tmp_path / "tiny.pt"
    save_checkpoint(Checkpoint(network, plan, network.build().state_dict(), train_modality="ct"), path)
    return path


def test_metadata_names_the_labels_and_the_plan_and_passes_monais_checks(untrained_checkpoint, tmp_path):
    bundle = export_bundle(untrained_checkpoint, tmp_path / "bundle")
    metadata = json.loads((bundle / METADATA_PATH).read_text())
    assert metadata["labels"] == {"0": "background", "1": "liver", "2": "spleen"}
    outputs = metadata["network_data_format"]["outputs"]["pred"]
    assert outputs["channel_def"] == metadata["labels"] and outputs["num_channels"] == 3
    assert metadata["network_data_format"]["inputs"]["image"]["spatial_shape"] == [32, 48]
    plan = metadata["fedseg"]["plan"]
    assert plan["target_spacing"] == [0.8, 0.9, 3.0] and plan["patch_size"] == [32, 48]
    assert metadata["fedseg"]["normalization"] == "per-image percentile window"
    assert metadata["monai_version"] == monai.__version__
    assert {"version", "pytorch_version", "numpy_version", "task", "description"} <= set(metadata)
    workflow = ConfigWorkflow(config_file=str(bundle / CONFIG_PATH), meta_file=str(bundle / METADATA_PATH),
                              logging_file=False, workflow_type="inference", bundle_root=str(bundle))
    workflow.initialize()  # builds the network and loads models/model.pt into it
    assert workflow.check_properties() == []  # every property MONAI requires of an inference bundle
    verify_net_in_out(net_id="network_def", meta_file=str(bundle / METADATA_PATH),
                      config_file=str(bundle / CONFIG_PATH), n=1, any=16)
    state = torch.load(bundle / MODEL_PATH, weights_only=True)
    for name, value in load_checkpoint(untrained_checkpoint).state_dict.items():
        assert torch.equal(state[name], value)


def test_a_folder_with_files_is_refused_unless_overwriting_which_keeps_others(untrained_checkpoint, tmp_path):
    out = tmp_path / "bundle"
    out.mkdir()
    notes = out / "notes.txt"
    notes.write_text("mine")
    with pytest.raises(ConfigError, match="is not empty"):
        export_bundle(untrained_checkpoint, out)
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]
    assert export_bundle(untrained_checkpoint, out, overwrite=True) == out
    (out / METADATA_PATH).write_text("stale")
    export_bundle(untrained_checkpoint, out, overwrite=True)
    assert json.loads((out / METADATA_PATH).read_text())["labels"]["2"] == "spleen"
    assert notes.read_text() == "mine"
    empty = tmp_path / "empty"
    empty.mkdir()
    assert (export_bundle(untrained_checkpoint, empty) / CONFIG_PATH).is_file()


def test_unusable_targets_and_checkpoints_are_typed_errors_and_write_nothing(untrained_checkpoint, tmp_path):
    a_file = tmp_path / "file"
    a_file.write_text("x")
    with pytest.raises(ConfigError, match="is not a folder"):
        export_bundle(untrained_checkpoint, a_file)
    not_a_checkpoint = tmp_path / "notes.pt"
    torch.save({"weights": torch.zeros(2)}, not_a_checkpoint)
    with pytest.raises(CheckpointError, match="not a FedSeg checkpoint"):
        export_bundle(not_a_checkpoint, tmp_path / "b1")
    checkpoint = load_checkpoint(untrained_checkpoint)
    checkpoint.state_dict = NetworkConfig(out_channels=3, channels=(8, 16)).build().state_dict()
    save_checkpoint(checkpoint, tmp_path / "misfit.pt")
    with pytest.raises(CheckpointError, match="do not fit its network"):
        export_bundle(tmp_path / "misfit.pt", tmp_path / "b2")
    assert not (tmp_path / "b1").exists() and not (tmp_path / "b2").exists()


def test_the_evaluator_refuses_an_empty_datalist():
    evaluator = Evaluator("cpu", [], torch.nn.Identity(), lambda image, network: image, lambda item: item)
    with pytest.raises(ConfigError, match="no study to segment"):
        evaluator.run()
