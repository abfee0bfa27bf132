"""Dataset folders whose images are DICOM series folders and whose labels are DICOM-SEG or NIfTI files:
the index, the prepared cases, the fingerprint and evaluation read them as they read NIfTI pairs.

The ground truth is the phantom the synth module draws in memory (segmentation.synth.phantom_case),
stored as sagittal (PIR) DICOM series."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace

import numpy as np
import pytest
from monai.data import load_decathlon_datalist

from segmentation.case_cache import CaseCache
from segmentation.datalist import load_dataset, write_dataset_json
from segmentation.errors import DatasetError, SeriesSelectionError
from segmentation.export import write_dicom_seg
from segmentation.fingerprint import fingerprint_cases
from segmentation.io.dicom import read_dicom_series
from segmentation.plan import Plan
from segmentation.preprocessing import prepare_study
from segmentation.synth import PhantomGeometry, generate_dataset
from segmentation.synth.anatomy import LABELS
from segmentation.synth.dataset import phantom_case, phantom_depth

SEED, SIZE = 11, 32
GEOMETRY = PhantomGeometry(orientation="PIR", file_format="dicom")
PLAN = Plan(labels=LABELS, spatial_dims=2, target_spacing=(12.5, 12.5, 25.0), patch_size=(16, 16))


def truth(index: int):
    """Case `index`'s image and label volumes as drawn, before any file was written."""
    return phantom_case(SEED, index, "ct", SIZE, phantom_depth(SIZE, 3), GEOMETRY)


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """Three phantom CTs as DICOM series: case 0 labelled by a DICOM-SEG, case 1 by its NIfTI file, the
    test case 2 by a DICOM-SEG; and a folder `both` holding the series of cases 0 and 1."""
    root = tmp_path_factory.mktemp("site")
    index = generate_dataset(root, "ct", 3, SEED, size=SIZE, test_fraction=0.34, geometry=GEOMETRY)
    for case, number in ((index.training[0], 0), (index.test[0], 2)):
        datasets = read_dicom_series(case.image).datasets
        write_dicom_seg(truth(number)[1], datasets, case.label.with_suffix("").with_suffix(".dcm"))
    for number, case in enumerate(index.training):
        shutil.copytree(case.image, root / "both" / f"s{number}")
    write_dataset_json(
        root, name="dicom site", modality="ct", labels=LABELS,
        training=[("imagesTr/synth_ct_000", "labelsTr/synth_ct_000.dcm"),
                  ("imagesTr/synth_ct_001", "labelsTr/synth_ct_001.nii.gz")],
        test=[("imagesTs/synth_ct_002", "labelsTs/synth_ct_002.dcm")],
    )
    return root


def series_uid_of(folder) -> str:
    return str(read_dicom_series(folder).info.uid)


def expected_prepared(index: int):
    image, label = truth(index)
    return prepare_study(image, PLAN, label, name=f"truth {index}")


def test_the_index_lists_series_folders_and_dicom_seg_labels(site):
    index = load_dataset(site)
    assert [case.image.is_dir() for case in index.training + index.test] == [True, True, True]
    assert [case.label.name for case in index.training] == ["synth_ct_000.dcm", "synth_ct_001.nii.gz"]
    assert [case.case_id for case in index.training] == ["synth_ct_000", "synth_ct_001"]
    assert all(case.series_uid is None for case in index.training + index.test)


def test_cases_prepare_exactly_as_the_drawn_phantoms_do(site, tmp_path):
    index = load_dataset(site)
    cache = CaseCache(tmp_path / "cache", PLAN)
    for number, case in enumerate((*index.training, *index.test)):
        prepared, expected = cache.load(case), expected_prepared(number)
        np.testing.assert_array_equal(prepared.label, expected.label)
        np.testing.assert_allclose(prepared.image, expected.image, atol=1e-6)
        assert set(np.unique(prepared.label)) - {0}, "the phantom's organs reach the prepared label"
    assert cache.misses == 3


def test_the_fingerprint_reads_every_pair(site):
    index = load_dataset(site)
    fingerprint = fingerprint_cases(index.training, index.labels)
    assert [case.orientation for case in fingerprint.cases] == ["PIR", "PIR"]


def test_evaluation_reads_a_dicom_seg_label_onto_the_series(site, tmp_path):
    from segmentation.algorithm import SegmentationAlgorithm
    from segmentation.settings import NetworkConfig, TrainingConfig

    config = TrainingConfig(plan=PLAN, network=NetworkConfig(out_channels=len(LABELS), channels=(4, 8)),
                            augmentation="none", cache_dir=tmp_path / "cache")
    algorithm = SegmentationAlgorithm(config, device="cpu")
    label = truth(0)[1].array
    algorithm.predict = lambda volume: np.where(label == 2, 0, label)  # the truth without the kidneys
    [case] = algorithm.evaluate(load_dataset(site).training[:1]).cases
    present = {LABELS[value] for value in np.unique(label)} - {"background"}
    assert "kidney" in present and len(present) >= 3
    assert {name: case.dice[name] for name in present} == {name: 0.0 if name == "kidney" else 1.0
                                                           for name in present}


def test_entries_name_one_series_of_a_folder_of_two(site, tmp_path):
    both = site / "both"
    uids = [series_uid_of(both / name) for name in ("s0", "s1")]
    write_dataset_json(tmp_path, name="shared folder", modality="ct", labels=LABELS, test=[],
                       training=[(str(both), str(site / "labelsTr/synth_ct_000.dcm"), uids[0]),
                                 (str(both), str(site / "labelsTr/synth_ct_001.nii.gz"), uids[1])])
    written = json.loads((tmp_path / "dataset.json").read_text())["training"]
    assert [entry["series_uid"] for entry in written] == uids
    assert [item["series_uid"] for item in load_decathlon_datalist(tmp_path / "dataset.json")] == uids
    index = load_dataset(tmp_path)
    assert [case.series_uid for case in index.training] == uids
    cache = CaseCache(tmp_path / "cache", PLAN)
    assert cache.key(index.training[0]) != cache.key(index.training[1])
    for number, case in enumerate(index.training):
        np.testing.assert_array_equal(cache.load(case).label, expected_prepared(number).label)
    with pytest.raises(SeriesSelectionError, match="holds 2 series"):
        cache.load(replace(index.training[0], series_uid=None))


@pytest.mark.parametrize(
    ("image", "series_uid", "words"),
    [
        ("both", "1.2.abc", "series_uid must be a DICOM UID"),
        ("both", 7, "series_uid must be a DICOM UID"),
        ("both", "1." + "2" * 70, "at most 64 characters"),
        ("labelsTr/synth_ct_001.nii.gz", "1.2.3", "is a file, not a DICOM folder"),
    ],
)
def test_a_bad_series_uid_is_a_dataset_error_naming_the_entry(site, tmp_path, image, series_uid, words):
    entry = {"image": str(site / image), "label": str(site / "labelsTr/synth_ct_001.nii.gz")}
    data = {"labels": {"0": "background", "1": "liver"}, "training": [{**entry, "series_uid": None}]}
    (tmp_path / "dataset.json").write_text(json.dumps(data))
    assert load_dataset(tmp_path).training[0].series_uid is None  # null: the folder's only series
    data["training"][0]["series_uid"] = series_uid
    (tmp_path / "dataset.json").write_text(json.dumps(data))
    with pytest.raises(DatasetError, match=words) as error:
        load_dataset(tmp_path)
    assert "training[0].series_uid" in str(error.value)
