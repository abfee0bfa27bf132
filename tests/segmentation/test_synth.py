"""The demo phantom: deterministic anatomy shared by all modalities, modality-specific contrast,
artefacts, and the MSD-style dataset folder it writes."""

import json

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from monai.data import load_decathlon_datalist
from scipy.ndimage import binary_erosion

from segmentation.datalist import load_dataset
from segmentation.errors import ConfigError, DatasetError
from segmentation.io import read_labeled_pair, read_volume
from segmentation.synth import (
    LABELS,
    PhantomGeometry,
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


# --- Geometry: the same body scanned like another hospital's scanner would ------------------------

ORGANS = {1: "liver", 2: "kidney", 3: "spleen", 4: "pancreas"}


def _organ_ml(label) -> dict[int, float]:
    """Each organ's physical volume in mL (voxel count x voxel volume in mm^3 / 1000)."""
    voxel_ml = float(np.prod(label.spacing)) / 1000.0
    return {value: float((label.array == value).sum()) * voxel_ml for value in ORGANS}


def _organ_centroid_mm(label, value: int) -> np.ndarray:
    """The organ's centroid as a physical (LPS) point in mm."""
    index = np.argwhere(label.array == value).mean(axis=0)[::-1]  # (z, y, x) -> SimpleITK's (x, y, z)
    return np.array(label.to_sitk().TransformContinuousIndexToPhysicalPoint([float(i) for i in index]))


def test_a_case_stored_as_pir_holds_the_same_labels_at_the_same_physical_points():
    spacing = (5.0, 6.0, 10.0)
    _, lps = phantom_case(2, 1, "ct", 32, 8, PhantomGeometry(spacing=spacing))
    pir_image, pir = phantom_case(2, 1, "ct", 32, 8, PhantomGeometry("PIR", spacing))
    # 400/5 = 80 columns (x, R->L), round(400/6) = 67 rows (y, A->P), 200/10 = 20 slices (z, I->S).
    assert lps.shape == (20, 67, 80) and lps.direction == (1, 0, 0, 0, 1, 0, 0, 0, 1)
    # PIR: x runs to posterior (67 at 6 mm), y to inferior (20 at 10 mm), z to the right (80 at 5 mm).
    assert pir.shape == (80, 20, 67) and pir.spacing == pytest.approx((6.0, 10.0, 5.0))
    assert pir.direction == pytest.approx((0, 0, -1, 1, 0, 0, 0, -1, 0))
    assert pir_image.geometry_differences(pir) == []
    lps_image, pir_sitk = lps.to_sitk(), pir.to_sitk()
    rng = np.random.default_rng(0)
    organ_voxels = [np.argwhere(lps.array == value)[rng.integers(0, (lps.array == value).sum(), 20)]
                    for value in ORGANS]
    anywhere = np.stack([rng.integers(0, n, 200) for n in lps.shape], axis=1)
    for z, y, x in np.concatenate([*organ_voxels, anywhere]):
        point = lps_image.TransformIndexToPhysicalPoint((int(x), int(y), int(z)))
        i, j, k = pir_sitk.TransformPhysicalPointToIndex(point)
        assert pir.array[k, j, i] == lps.array[z, y, x]
    assert _organ_ml(pir) == pytest.approx(_organ_ml(lps), rel=1e-9)
    for label in (lps, pir):  # patient's right is -x in LPS: the liver lies right of the spleen
        assert _organ_centroid_mm(label, 1)[0] < 0 < _organ_centroid_mm(label, 3)[0]


def test_a_finer_spacing_puts_more_voxels_on_the_same_body():
    _, coarse = phantom_case(0, 1, "ct", 48, 12)  # 400/48 = 8.33 mm pixels, 200/12 = 16.7 mm slices
    _, half = phantom_case(0, 1, "ct", 48, 12, PhantomGeometry(spacing=(400 / 96, 400 / 96, 200 / 24)))
    _, fine = phantom_case(0, 1, "ct", 48, 12, PhantomGeometry(spacing=(5.0, 4.0, 10.0)))
    assert coarse.shape == (12, 48, 48)
    assert half.shape == (24, 96, 96)  # half the voxel size: twice the voxels along every axis
    assert fine.shape == (20, 100, 80)  # 200/10 slices, 400/4 rows, 400/5 columns
    for label in (half, fine):
        assert _organ_ml(label) == pytest.approx(_organ_ml(coarse), rel=0.1)
        for value in ORGANS:  # the same place, to within half a coarse pixel
            assert np.abs(_organ_centroid_mm(label, value) - _organ_centroid_mm(coarse, value)).max() < 4.2


def test_a_wider_field_of_view_adds_surroundings_around_the_same_body():
    image, label = phantom_case(1, 0, "ct", 32, 8)
    wide_image, wide = phantom_case(1, 0, "ct", 32, 8, PhantomGeometry(field_of_view_mm=600))
    assert wide.shape == (8, 48, 48) and wide.spacing == label.spacing  # 600 mm of 12.5 mm pixels
    assert wide.origin[:2] == pytest.approx((-300 + 6.25, -300 + 6.25)) and wide.origin[2] == label.origin[2]
    assert _organ_ml(wide) == pytest.approx(_organ_ml(label), rel=1e-3)
    for value in ORGANS:
        np.testing.assert_allclose(_organ_centroid_mm(wide, value), _organ_centroid_mm(label, value),
                                   atol=0.1)
    # The 100 mm (8-pixel) margin around the old field of view: no organs, and air in CT.
    margin = np.ones(wide.shape, bool)
    margin[:, 8:40, 8:40] = False
    assert wide.array[margin].max() == 0
    assert wide_image.array[margin].mean() == pytest.approx(-1000, abs=10)
    assert (wide.array[:, 8:40, 8:40] == label.array).mean() > 0.999


def test_the_default_geometry_is_the_reference_grid_and_its_place():
    _, reference = phantom_case(0, 0, "mr-t2", 32, 8)
    _, same = phantom_case(0, 0, "mr-t2", 32, 8, PhantomGeometry(spacing=(12.5, 12.5, 25.0)))
    assert reference.origin == pytest.approx((-193.75, -193.75, 0.0))  # first voxel centre: -200 + 12.5/2
    assert same.origin == pytest.approx(reference.origin)
    assert (same.array == reference.array).mean() > 0.999


@pytest.fixture(scope="module")
def scanned_pair(tmp_path_factory):
    """One CT dataset written as NIfTI and as DICOM, both sagittal (PIR) with anisotropic voxels."""
    root = tmp_path_factory.mktemp("scanned")
    geometry = {"orientation": "PIR", "spacing": (6.0, 7.0, 9.0)}
    return tuple(
        generate_dataset(root / file_format, "ct", cases=3, seed=4, size=32,
                         geometry=PhantomGeometry(**geometry, file_format=file_format))
        for file_format in ("nifti", "dicom")
    )


def test_dicom_images_read_back_as_the_nifti_images_of_the_same_cases(scanned_pair):
    nifti, dicom = scanned_pair
    assert [case.case_id for case in dicom.training] == ["synth_ct_000", "synth_ct_001"]
    assert dicom.test[0].case_id == "synth_ct_002"
    entries = json.loads((dicom.root / "dataset.json").read_text())["training"]
    assert entries[0] == {"image": "./imagesTr/synth_ct_000/", "label": "./labelsTr/synth_ct_000.nii.gz"}
    for from_nifti, from_dicom in zip(nifti.training + nifti.test, dicom.training + dicom.test, strict=True):
        assert from_dicom.image.is_dir() and from_dicom.label.name.endswith(".nii.gz")
        expected, image = read_volume(from_nifti.image), read_volume(from_dicom.image)
        np.testing.assert_array_equal(image.array, expected.array)
        assert image.array.dtype == np.int16 and image.modality == "ct"
        assert image.shape == (67, 22, 57)  # PIR: 400/6 columns to the right, 200/9 slices, 400/7 rows
        np.testing.assert_allclose(image.spacing, (7.0, 9.0, 6.0), atol=1e-6)
        np.testing.assert_allclose(image.origin, expected.origin, atol=1e-4)
        np.testing.assert_allclose(image.direction, (0, 0, -1, 1, 0, 0, 0, -1, 0), atol=1e-9)
        _, label = read_labeled_pair(from_dicom.image, from_dicom.label)  # the NIfTI label lines up
        np.testing.assert_array_equal(label.array, read_volume(from_nifti.label).array)


def test_dicom_series_are_ct_images_of_a_named_phantom_patient_with_stable_uids(scanned_pair, tmp_path):
    _, dicom = scanned_pair
    files = sorted(dicom.training[1].image.iterdir())
    headers = [pydicom.dcmread(file) for file in files]
    assert len(files) == 67  # one single-frame file per slice
    first = headers[0]
    assert first.SOPClassUID == "1.2.840.10008.5.1.4.1.1.2" and first.Modality == "CT"  # CT Image Storage
    assert str(first.PatientName) == "Phantom^4-001" and "4-001" in first.PatientID
    assert (float(first.RescaleSlope), float(first.RescaleIntercept)) == (1.0, -1024.0)
    for keyword in ("StudyInstanceUID", "SeriesInstanceUID", "FrameOfReferenceUID"):
        assert len({header.get(keyword) for header in headers}) == 1, keyword
    assert len({header.SOPInstanceUID for header in headers}) == len(headers)
    other_case = pydicom.dcmread(next(dicom.training[0].image.iterdir()))
    assert other_case.StudyInstanceUID != first.StudyInstanceUID
    again = generate_dataset(tmp_path, "ct", cases=3, seed=4, size=32, geometry=PhantomGeometry(
        "PIR", (6.0, 7.0, 9.0), file_format="dicom"))
    regenerated = pydicom.dcmread(sorted(again.training[1].image.iterdir())[0])
    for keyword in ("StudyInstanceUID", "SeriesInstanceUID", "FrameOfReferenceUID", "SOPInstanceUID"):
        assert regenerated.get(keyword) == first.get(keyword), keyword


def test_overwriting_a_dicom_dataset_replaces_its_series(tmp_path):
    generate_dataset(tmp_path, "mr-t1", cases=2, seed=0, size=16,
                     geometry=PhantomGeometry(file_format="dicom"))
    again = generate_dataset(tmp_path, "mr-t1", cases=2, seed=0, size=16, overwrite=True,
                             geometry=PhantomGeometry(spacing=(25.0, 25.0, 50.0), file_format="dicom"))
    series = again.training[0].image
    assert len(list(series.iterdir())) == 4  # 200/50 slices, none left over from the 8-slice series
    assert read_volume(series).shape == (4, 16, 16)
    assert pydicom.dcmread(next(series.iterdir())).SOPClassUID == "1.2.840.10008.5.1.4.1.1.4"  # MR Image


@pytest.mark.parametrize(
    ("geometry", "message"),
    [
        ({"orientation": "LPX"}, "orientation must be 3 letters"),
        ({"orientation": "LLS"}, "orientation must be 3 letters"),
        ({"orientation": "LP"}, "orientation must be 3 letters"),
        ({"orientation": "ASL", "file_format": "dicom"}, "ASL is left-handed.*use ASR"),
        ({"spacing": (1.0, -1.0, 2.0)}, "spacing must be three positive"),
        ({"spacing": (1.0, 1.0)}, "spacing must be three positive"),
        ({"spacing": (1.0, float("nan"), 1.0)}, "spacing must be three positive"),
        ({"field_of_view_mm": 50.0}, "field of view must be between 100 and 1000 mm, got 50"),
        ({"field_of_view_mm": float("nan")}, "field of view"),
        ({"file_format": "png"}, "file format must be one of nifti, dicom"),
    ],
)
def test_bad_geometry_values_are_config_errors(geometry, message):
    with pytest.raises(ConfigError, match=message):
        PhantomGeometry(**geometry)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"geometry": PhantomGeometry(spacing=(0.5, 0.5, 0.5))}, "800 x 800 x 400 voxels"),
        ({"geometry": PhantomGeometry(spacing=(30.0, 30.0, 5.0))}, "13 x 13 pixels in-plane"),
        ({"geometry": PhantomGeometry(spacing=(5.0, 5.0, 150.0))}, "at least 2 slices"),
        ({"dim": 2, "geometry": PhantomGeometry("PIR")}, "2D phantom is one axial slice"),
    ],
)
def test_grids_the_phantom_cannot_render_are_refused_before_anything_is_written(tmp_path, settings, message):
    with pytest.raises(ConfigError, match=message):
        generate_dataset(tmp_path / "out", "ct", cases=2, seed=0, size=32, **settings)
    assert not (tmp_path / "out").exists()


def test_single_slices_may_be_stored_rotated_with_their_own_thickness():
    _, lps = phantom_case(3, 0, "ct", 32, 1)
    _, rai = phantom_case(3, 0, "ct", 32, 1, PhantomGeometry("RAI", spacing=(12.5, 12.5, 3.0)))
    assert lps.shape == rai.shape == (1, 32, 32)
    assert lps.spacing[2] == 5.0 and rai.spacing == pytest.approx((12.5, 12.5, 3.0))
    assert rai.direction == pytest.approx((-1, 0, 0, 0, -1, 0, 0, 0, -1))
    # RAI stores the slice with columns running right and rows running anterior: the LPS slice turned
    # by 180 degrees, whose first voxel is the LPS slice's last.
    np.testing.assert_array_equal(rai.array, lps.array[:, ::-1, ::-1])
    assert rai.origin[:2] == pytest.approx((193.75, 193.75))
