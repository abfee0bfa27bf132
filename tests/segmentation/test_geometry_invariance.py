"""One study stored many ways is segmented alike (issue 12's must-show).

A 2D model is trained once on phantom CT. One held-out case is then stored other ways, each built here
by hand with numpy (axes flipped, axes permuted as sagittal or coronal slices, a finer spacing over a
wider field of view) with its geometry rewritten so that every voxel keeps its physical place. Each
variant must score against its own label within 0.03 of the original, and its prediction, brought back
onto the original grid by the inverse index operation, must agree with the original's. Dice is counted
here, not by the code under test. Any axis flipped or permuted on the way breaks these tests.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from segmentation.algorithm import SegmentationAlgorithm
from segmentation.checkpoint import Checkpoint
from segmentation.fingerprint import plan_for_cases
from segmentation.inference import predict_volume
from segmentation.io import read_labeled_pair, read_volume
from segmentation.plan import Plan
from segmentation.settings import NetworkConfig, TrainingConfig
from segmentation.synth import generate_dataset
from segmentation.volume import Volume


def flip(volume: Volume, axis: int) -> Volume:
    """The same voxels stored with array axis `axis` (0 z, 1 y, 2 x) running the other way."""
    column = 2 - axis  # direction columns are x, y, z
    direction = np.asarray(volume.direction).reshape(3, 3).copy()
    last = np.zeros(3)
    last[column] = volume.shape[axis] - 1
    origin = np.asarray(volume.origin) + direction @ (last * np.asarray(volume.spacing))
    direction[:, column] *= -1
    return volume.with_array(np.ascontiguousarray(np.flip(volume.array, axis)), origin=tuple(origin),
                             direction=tuple(direction.ravel()))


def permute(volume: Volume, order: tuple[int, int, int]) -> Volume:
    """The same voxels with array axes reordered (new axis i is old axis order[i], in (z, y, x))."""
    columns = [2 - order[2], 2 - order[1], 2 - order[0]]  # new x, y, z columns from old ones
    direction = np.asarray(volume.direction).reshape(3, 3)[:, columns]
    spacing = tuple(volume.spacing[c] for c in columns)
    return volume.with_array(np.ascontiguousarray(volume.array.transpose(order)), spacing=spacing,
                             direction=tuple(direction.ravel()))


def finer_and_wider(volume: Volume, margin: int, label: bool) -> Volume:
    """Twice as many pixels per row and column (linear for images, nearest for labels), plus `margin`
    fine pixels of air (drawn from the scan's own corner, noise included) or background on every side.
    Fine pixel 2i + margin lies on coarse pixel i."""
    array = volume.array.astype(np.float32)
    z, y, x = array.shape
    fine = np.empty((z, 2 * y - 1, 2 * x - 1), np.float32)
    fine[:, ::2, ::2] = array
    if label:
        fine[:, 1::2, :] = fine[:, 0:-1:2, :]
        fine[:, :, 1::2] = fine[:, :, 0:-1:2]
    else:
        fine[:, 1::2, ::2] = (array[:, :-1] + array[:, 1:]) / 2
        fine[:, :, 1::2] = (fine[:, :, 0:-1:2] + fine[:, :, 2::2]) / 2
    wide = np.pad(fine, ((0, 0), (margin, margin), (margin, margin)))
    if not label:
        air = array[:, :4, :4].ravel()  # a corner of the scan: air as this scanner records it
        outside = np.ones(wide.shape, bool)
        outside[:, margin:-margin, margin:-margin] = False
        wide[outside] = np.random.default_rng(0).choice(air, int(outside.sum()))
    spacing = (volume.spacing[0] / 2, volume.spacing[1] / 2, volume.spacing[2])
    direction = np.asarray(volume.direction).reshape(3, 3)
    origin = np.asarray(volume.origin) - direction @ (np.array([margin, margin, 0]) * np.asarray(spacing))
    return volume.with_array(wide.astype(volume.array.dtype), spacing=spacing, origin=tuple(origin))


def mean_dice(a: np.ndarray, b: np.ndarray, labels) -> float:
    """Mean over the foreground labels present in either map (counted here, independently)."""
    scores = []
    for value in labels:
        left, right = a == value, b == value
        total = left.sum() + right.sum()
        if value and total:
            scores.append(2.0 * np.logical_and(left, right).sum() / total)
    return float(np.mean(scores))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """The demo's 2D U-Net trained on 12 phantom CTs (about a minute), and one held-out case."""
    root = tmp_path_factory.mktemp("geometry")
    dataset = generate_dataset(root / "ct", "ct", cases=13, seed=3, size=64, test_fraction=1 / 13)
    network = NetworkConfig(out_channels=len(dataset.labels), channels=(16, 32, 64, 128))
    plan, _ = plan_for_cases(dataset.training, dataset.labels, network, batch_size=16)
    config = TrainingConfig(plan=plan, network=network, augmentation="gin", augmentation_probability=0.5,
                            learning_rate=3e-3, cache_dir=root / "cache")
    threads = torch.get_num_threads()
    torch.set_num_threads(2)  # a fixed summation order: the same model on every machine
    try:
        algorithm = SegmentationAlgorithm(config, device="cpu")
        algorithm.train(dataset, 60)
    finally:
        torch.set_num_threads(threads)
    image, label = read_labeled_pair(dataset.test[0].image, dataset.test[0].label)
    return algorithm, image.with_array(image.array, modality="ct"), label


@pytest.fixture(scope="module")
def original(trained):
    algorithm, image, label = trained
    prediction = algorithm.predict(image)
    dice = mean_dice(prediction, label.array, algorithm.labels)
    assert dice > 0.7  # a model worth comparing, whose mask lands where the organs are
    return prediction, dice


VARIANTS = {
    # name: (how it is stored, how its prediction comes back onto the original grid)
    "x and y flipped (RAS storage)": (lambda v: flip(flip(v, 2), 1), lambda p: p[:, ::-1, ::-1]),
    "slices along z reversed": (lambda v: flip(v, 0), lambda p: p[::-1]),
    "stored as sagittal slices": (lambda v: permute(v, (2, 0, 1)), lambda p: p.transpose(1, 2, 0)),
    "stored as coronal slices, flipped": (lambda v: flip(permute(v, (1, 0, 2)), 2),
                                          lambda p: p[:, :, ::-1].transpose(1, 0, 2)),
}


@pytest.mark.slow
@pytest.mark.parametrize("name", list(VARIANTS))
def test_a_study_stored_another_way_is_segmented_alike(trained, original, name):
    algorithm, image, label = trained
    store, back = VARIANTS[name]
    variant_image, variant_label = store(image), store(label)
    assert variant_image.shape != image.shape or not np.array_equal(variant_image.array, image.array)
    prediction = algorithm.predict(variant_image)
    assert prediction.shape == variant_image.shape
    reference, reference_dice = original
    assert abs(mean_dice(prediction, variant_label.array, algorithm.labels) - reference_dice) <= 0.03
    assert mean_dice(back(prediction), reference, algorithm.labels) >= 0.95


@pytest.mark.slow
def test_a_finer_spacing_over_a_wider_field_of_view_is_segmented_alike(trained, original):
    algorithm, image, label = trained
    margin = 32
    variant_image = finer_and_wider(image, margin, label=False)
    variant_label = finer_and_wider(label, margin, label=True)
    assert variant_image.shape == (16, 2 * 64 - 1 + 2 * margin, 2 * 64 - 1 + 2 * margin)
    prediction = algorithm.predict(variant_image)
    reference, reference_dice = original
    assert abs(mean_dice(prediction, variant_label.array, algorithm.labels) - reference_dice) <= 0.03
    on_original_grid = prediction[:, margin:-margin:2, margin:-margin:2]
    assert mean_dice(on_original_grid, reference, algorithm.labels) >= 0.95


@pytest.mark.slow
def test_a_dicom_series_and_a_nifti_of_one_study_get_the_same_mask(trained, original, tmp_path, write_series):
    """The DICOM series is stored LPS (DICOM's convention), the NIfTI with x and y flipped (RAS)."""
    import SimpleITK as sitk

    algorithm, image, _ = trained
    write_series(image.to_sitk(), tmp_path / "series", modality="CT", description="phantom",
                 series_uid="1.2.826.0.1.3680043.8.498.1", rescale_intercept=-1024)
    from_dicom = read_volume(tmp_path / "series")
    ras = flip(flip(image, 2), 1)
    sitk.WriteImage(ras.to_sitk(), str(tmp_path / "study.nii.gz"))
    from_nifti = read_volume(tmp_path / "study.nii.gz")
    np.testing.assert_array_equal(from_dicom.array, image.array)  # really two storages of one study
    np.testing.assert_array_equal(from_nifti.array, image.array[:, ::-1, ::-1])
    dicom_mask = algorithm.predict(from_dicom.with_array(from_dicom.array, modality="ct"))
    nifti_mask = algorithm.predict(from_nifti.with_array(from_nifti.array, modality="ct"))
    assert mean_dice(dicom_mask, nifti_mask[:, ::-1, ::-1], algorithm.labels) >= 0.98
    assert mean_dice(dicom_mask, original[0], algorithm.labels) >= 0.98


def test_a_3d_model_sees_every_storage_of_a_study_identically():
    """A random 3D network is no flip- or permutation-equivariant function, so only a pipeline that
    brings every storage to one canonical grid gives the same mask for all of them."""
    torch.manual_seed(0)
    labels = {0: "background", 1: "a", 2: "b"}
    network = NetworkConfig(spatial_dims=3, out_channels=3, channels=(4, 8))
    plan = Plan(labels=labels, spatial_dims=3, target_spacing=(2.0, 1.5, 3.0), patch_size=(8, 16, 16))
    checkpoint = Checkpoint(network=network, plan=plan, state_dict=network.build().state_dict())
    rng = np.random.default_rng(1)
    array = rng.normal(0.0, 1.0, (10, 24, 20)).astype(np.float32)
    array[3:7, 5:15, 4:12] += 3.0
    study = Volume(array, spacing=(2.0, 1.5, 3.0), origin=(-20.0, 10.0, 5.0))
    reference = predict_volume(checkpoint, study, device="cpu").array
    assert len(np.unique(reference)) > 1
    for store, back in VARIANTS.values():
        mask = predict_volume(checkpoint, store(study), device="cpu").array
        np.testing.assert_array_equal(back(mask), reference)
