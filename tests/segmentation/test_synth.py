"""The demo phantom: deterministic anatomy shared by all modalities, modality-specific contrast,
artefacts, and the MSD-style dataset folder it writes."""

import json

import numpy as np
import pytest
import SimpleITK as sitk
from monai.data import load_decathlon_datalist
from scipy.ndimage import binary_erosion

from segmentation.datalist import load_dataset
from segmentation.errors import ConfigError, DatasetError
from segmentation.synth import (
    LABELS,
    Tissue,
    generate_dataset,
    phantom_case,
    phantom_depth,
    render,
    sample_anatomy,
)

SIZE = 64
DEPTH = phantom_depth(SIZE, 3)


@pytest.fixture(scope="module")
def anatomy():
    return sample_anatomy(np.random.default_rng([5, 0, 0]), SIZE, DEPTH)


@pytest.fixture(scope="module")
def images(anatomy):
    return {m: render(anatomy.tissues, m, np.random.default_rng([5, 0, i])) for i, m in
            enumerate(("ct", "mr-t1", "mr-t2"), start=1)}


def _interior_mean(image: np.ndarray, tissues: np.ndarray, tissue: Tissue) -> float:
    """Mean away from the edges (in-plane erosion), where partial volume does not mix tissues."""
    inside = binary_erosion(tissues == tissue, structure=np.ones((1, 3, 3), bool))
    assert inside.sum() > 5, f"too few interior voxels of {tissue.name}"
    return float(image[inside].mean())


def _centroid(mask: np.ndarray) -> np.ndarray:
    return np.argwhere(mask).mean(axis=0)


def test_anatomy_is_deterministic_and_varies_between_seeds(anatomy):
    again = sample_anatomy(np.random.default_rng([5, 0, 0]), SIZE, DEPTH)
    other = sample_anatomy(np.random.default_rng([6, 0, 0]), SIZE, DEPTH)
    np.testing.assert_array_equal(anatomy.tissues, again.tissues)
    assert (anatomy.labels != other.labels).mean() > 0.01


def test_labels_are_the_documented_organs_and_all_present(anatomy):
    assert LABELS == {0: "background", 1: "liver", 2: "kidney", 3: "spleen", 4: "pancreas"}
    assert anatomy.labels.dtype == np.uint8 and anatomy.labels.shape == (DEPTH, SIZE, SIZE)
    assert set(np.unique(anatomy.labels)) == set(LABELS)
    volumes = {value: int((anatomy.labels == value).sum()) for value in LABELS}
    assert volumes[1] > volumes[3] > volumes[4]  # liver > spleen > pancreas (the small, hard one)


def test_organs_sit_where_abdominal_anatomy_puts_them(anatomy):
    labels = anatomy.labels
    liver, kidney, spleen = (_centroid(labels == value) for value in (1, 2, 3))
    assert liver[2] < SIZE / 2 < spleen[2]  # radiological view: liver on the image's left
    assert kidney[0] < liver[0]  # slices go inferior -> superior; kidneys sit lower than the liver
    assert kidney[1] > liver[1]  # and posterior to it
    liver_area = (labels == 1).sum(axis=(1, 2))
    assert liver_area[-3:].mean() > 2 * liver_area[:3].mean()  # organs change across slices


def test_single_slice_cases_cut_through_the_kidneys():
    for seed in range(3):
        labels = sample_anatomy(np.random.default_rng([seed, 0, 0]), SIZE, 1).labels
        assert labels.shape == (1, SIZE, SIZE)
        assert {1, 2} <= set(np.unique(labels))


def test_ct_is_in_hounsfield_units_per_tissue(anatomy, images):
    ct, tissues = images["ct"], anatomy.tissues
    measured = (Tissue.FAT, Tissue.LIVER, Tissue.SPLEEN, Tissue.MUSCLE)
    mean = {tissue: _interior_mean(ct, tissues, tissue) for tissue in measured}
    assert float(ct[tissues == Tissue.AIR].mean()) == pytest.approx(-1000, abs=15)
    assert -130 < mean[Tissue.FAT] < -70
    for organ in (Tissue.LIVER, Tissue.SPLEEN, Tissue.MUSCLE):
        assert 25 < mean[organ] < 80, organ.name
    assert mean[Tissue.LIVER] > mean[Tissue.SPLEEN]  # non-contrast CT: liver a little brighter
    assert float(ct[tissues == Tissue.MARROW].mean()) > 150  # bone is bright
    noise = ct[binary_erosion(tissues == Tissue.AIR, iterations=3)].std()
    assert 8 < noise < 25


def test_t1_and_t2_order_the_tissues_differently(anatomy, images):
    tissues = anatomy.tissues
    t1 = {t: _interior_mean(images["mr-t1"], tissues, t) for t in (Tissue.FAT, Tissue.LIVER, Tissue.SPLEEN)}
    t2 = {t: _interior_mean(images["mr-t2"], tissues, t) for t in (Tissue.FAT, Tissue.LIVER, Tissue.SPLEEN)}
    assert t1[Tissue.FAT] > t1[Tissue.LIVER] > t1[Tissue.SPLEEN]  # T1: fat bright, liver > spleen
    assert t2[Tissue.SPLEEN] > t2[Tissue.LIVER] > t2[Tissue.FAT]  # T2 (fat-suppressed): spleen > liver
    fluid = tissues == Tissue.FLUID
    assert images["mr-t1"][fluid].mean() < 0.5 * t1[Tissue.LIVER]  # fluid dark on T1
    assert images["mr-t2"][fluid].mean() > t2[Tissue.LIVER]  # and bright on T2


def test_mr_has_a_smooth_bias_field_and_rician_noise_ct_has_neither():
    uniform = np.full((8, 48, 48), Tissue.LIVER, np.uint8)
    uniform[:, :4] = Tissue.AIR
    coarse_variation = {}
    for modality in ("ct", "mr-t1"):
        image = render(uniform, modality, np.random.default_rng(1))
        organ, air = image[:, 8:, :], image[:, :3]
        assert organ.std() > 0  # noise
        # Means of 8x8 blocks: noise averages out, a smooth multiplicative bias field does not.
        blocks = organ.reshape(8, 5, 8, 6, 8).mean(axis=(2, 4))
        coarse_variation[modality] = blocks.std() / abs(blocks.mean())
        if modality == "ct":
            assert air.mean() == pytest.approx(-1000, abs=5)
            assert blocks.std() < 6  # HU: what is left of the noise
        else:
            assert air.min() >= 0 and air.mean() > 0  # Rician noise is a magnitude: never negative
    assert coarse_variation["mr-t1"] > 0.04


def test_render_rejects_an_unknown_modality(anatomy):
    with pytest.raises(ConfigError, match="pet"):
        render(anatomy.tissues, "pet", np.random.default_rng(0))


def test_a_case_has_the_same_anatomy_in_every_modality_and_physical_geometry():
    ct_image, ct_label = phantom_case(3, 2, "ct", 32, phantom_depth(32, 3))
    t2_image, t2_label = phantom_case(3, 2, "mr-t2", 32, phantom_depth(32, 3))
    np.testing.assert_array_equal(ct_label.array, t2_label.array)
    assert not np.allclose(ct_image.array, t2_image.array)
    assert ct_image.array.dtype == np.int16 and t2_image.array.dtype == np.float32
    assert ct_image.shape == (8, 32, 32)
    assert ct_image.spacing == pytest.approx((12.5, 12.5, 25.0))
    assert ct_image.geometry_differences(ct_label) == []
    assert ct_label.labels == LABELS and ct_image.modality == "ct"


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return generate_dataset(tmp_path_factory.mktemp("synth") / "t1", "mr-t1", cases=5, seed=4, size=32)


def test_dataset_folder_is_msd_style_and_loads(dataset):
    root = dataset.root
    assert (len(dataset.training), len(dataset.test)) == (4, 1)
    assert dataset.modality == "mr-t1" and dataset.labels == LABELS
    data = json.loads((root / "dataset.json").read_text())
    assert data["modality"] == {"0": "T1"} and data["labels"]["4"] == "pancreas"
    assert (data["numTraining"], data["numTest"]) == (4, 1)
    monai_training = load_decathlon_datalist(root / "dataset.json")
    monai_test = load_decathlon_datalist(root / "dataset.json", data_list_key="test")
    assert [item["image"] for item in monai_training] == [str(case.image) for case in dataset.training]
    assert monai_test[0]["label"] == str(dataset.test[0].label)
    assert all(case.image.parent.name == "imagesTr" and case.label.parent.name == "labelsTr"
               for case in dataset.training)
    assert dataset.test[0].image.parent.name == "imagesTs"


def test_dataset_files_hold_the_phantom_cases(dataset):
    case = dataset.training[1]
    image = sitk.ReadImage(str(case.image))
    label = sitk.ReadImage(str(case.label))
    expected_image, expected_label = phantom_case(4, 1, "mr-t1", 32, phantom_depth(32, 3))
    np.testing.assert_allclose(sitk.GetArrayFromImage(image), expected_image.array)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(label), expected_label.array)
    assert image.GetSpacing() == pytest.approx(expected_image.spacing)


def test_two_dimensional_datasets_hold_single_slices(tmp_path):
    index = generate_dataset(tmp_path / "ct2d", "ct", cases=2, seed=0, size=32, dim=2, test_fraction=0.0)
    assert len(index.training) == 2 and index.test == ()
    assert sitk.ReadImage(str(index.training[0].image)).GetSize() == (32, 32, 1)


def test_generation_refuses_a_folder_that_is_not_empty_unless_told(tmp_path):
    generate_dataset(tmp_path, "ct", cases=2, seed=0, size=16)
    with pytest.raises(DatasetError, match="not empty"):
        generate_dataset(tmp_path, "mr-t2", cases=3, seed=1, size=16)
    again = generate_dataset(tmp_path, "mr-t2", cases=3, seed=1, size=16, overwrite=True)
    assert (again.modality, len(again.training), len(again.test)) == ("mr-t2", 2, 1)
    assert load_dataset(tmp_path).name == "synth_mrt2"


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"modality": "pet"}, "modality"),
        ({"cases": 0}, "cases"),
        ({"size": 8}, "size"),
        ({"dim": 4}, "dim"),
        ({"test_fraction": 1.0}, "test fraction"),
    ],
)
def test_bad_settings_are_config_errors_before_anything_is_written(tmp_path, changes, message):
    settings = {"modality": "ct", "cases": 2, "seed": 0, "size": 32, **changes}
    with pytest.raises(ConfigError, match=message):
        generate_dataset(tmp_path / "out", **settings)
    assert not (tmp_path / "out").exists()
