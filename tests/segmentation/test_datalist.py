"""The MSD-style dataset index: writing, reading back (ours and MONAI's reader), and clear errors."""

import json
from pathlib import Path

import pytest
from monai.data import load_decathlon_datalist

from segmentation.datalist import CaseEntry, case_id_of, load_dataset, write_dataset_json
from segmentation.errors import DatasetError, FedSegError

LABELS = {0: "background", 1: "liver", 2: "kidney"}


def _touch(root: Path, *names: str) -> None:
    for name in names:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(b"")


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    _touch(tmp_path, "imagesTr/a_001.nii.gz", "labelsTr/a_001.nii.gz", "imagesTr/a_002.nii.gz",
           "labelsTr/a_002.nii.gz", "imagesTs/a_003.nii.gz", "labelsTs/a_003.nii.gz")
    write_dataset_json(
        tmp_path, name="demo", modality="mr-t1", labels=LABELS, description="two cases",
        training=[("./imagesTr/a_001.nii.gz", "./labelsTr/a_001.nii.gz"),
                  ("./imagesTr/a_002.nii.gz", "./labelsTr/a_002.nii.gz")],
        test=[("./imagesTs/a_003.nii.gz", "./labelsTs/a_003.nii.gz")],
    )
    return tmp_path


def _edit(root: Path, **changes) -> None:
    path = root / "dataset.json"
    data = json.loads(path.read_text())
    for key, value in changes.items():
        if value is None:
            data.pop(key)
        else:
            data[key] = value
    path.write_text(json.dumps(data))


def test_written_index_reads_back_with_absolute_paths_and_the_fine_modality(folder):
    index = load_dataset(folder)
    assert index.root == folder.resolve() and index.name == "demo"
    assert index.modality == "mr-t1"
    assert index.labels == LABELS and index.foreground_labels == {1: "liver", 2: "kidney"}
    assert index.training[0] == CaseEntry(
        image=folder.resolve() / "imagesTr/a_001.nii.gz", label=folder.resolve() / "labelsTr/a_001.nii.gz",
        modality="mr-t1", case_id="a_001",
    )
    assert [case.case_id for case in index.test] == ["a_003"]


def test_written_json_is_msd_and_monai_reads_it(folder):
    data = json.loads((folder / "dataset.json").read_text())
    assert data["modality"] == {"0": "T1"} and data["fedseg"] == {"modality": "mr-t1"}
    assert data["labels"] == {"0": "background", "1": "liver", "2": "kidney"}
    assert (data["numTraining"], data["numTest"], data["description"]) == (2, 1, "two cases")
    training = load_decathlon_datalist(folder / "dataset.json")
    test = load_decathlon_datalist(folder / "dataset.json", data_list_key="test")
    assert training[1] == {"image": str(folder / "imagesTr/a_002.nii.gz"),
                           "label": str(folder / "labelsTr/a_002.nii.gz")}
    assert test[0]["image"] == str(folder / "imagesTs/a_003.nii.gz")


@pytest.mark.parametrize(("msd", "tag"), [("CT", "ct"), ("MRI", "mr"), ("T2", "mr-t2"), ("PET", "unknown")])
def test_a_plain_msd_file_maps_its_modality_and_bare_test_paths(folder, msd, tag):
    _edit(folder, fedseg=None, modality={"0": msd}, test=["imagesTs/a_003.nii.gz"])
    index = load_dataset(folder)
    assert index.modality == tag and index.training[0].modality == tag
    assert index.test[0].label is None and index.test[0].case_id == "a_003"


def test_test_list_and_counts_are_optional(folder):
    _edit(folder, test=None, numTest=None, numTraining=None, name=None)
    index = load_dataset(folder)
    assert index.test == () and len(index.training) == 2 and index.name == folder.name


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"labels": None}, "lacks the required key 'labels'"),
        ({"training": None}, "lacks the required key 'training'"),
        ({"labels": {"0": "background", "liver": "1"}}, "label key 'liver' is not an integer"),
        ({"labels": {"1": "liver"}}, r"needs \"0\" \(background\)"),
        ({"labels": {"0": "background"}}, "no foreground label"),
        ({"labels": ["background", "liver"]}, "'labels' must map"),
        ({"training": {"image": "x"}}, "'training' must be a list"),
        ({"training": [{"image": "./imagesTr/a_001.nii.gz"}]}, r"training\[0\] has no 'label'"),
        ({"training": [{"label": "./labelsTr/a_001.nii.gz"}]}, r"training\[0\] must be an object"),
        ({"training": [{"image": "./imagesTr/a_001.nii.gz", "label": "./labelsTr/gone.nii.gz"}]},
         r"training\[0\]\.label names ./labelsTr/gone.nii.gz, which does not exist"),
        ({"test": [{"image": 7}]}, r"test\[0\]\.image must be a file path"),
        ({"numTraining": 5}, "'numTraining' says 5 but the list holds 2"),
        ({"fedseg": None, "modality": {"0": "T1", "1": "T2"}}, "lists 2 image channels"),
    ],
)
def test_bad_dataset_json_names_the_key_and_reason(folder, changes, message):
    _edit(folder, **changes)
    with pytest.raises(DatasetError, match=message) as error:
        load_dataset(folder)
    assert "\n" not in str(error.value)


def test_unreadable_folders_and_files_are_dataset_errors(tmp_path):
    with pytest.raises(DatasetError, match="does not exist"):
        load_dataset(tmp_path / "nowhere")
    with pytest.raises(DatasetError, match="has no dataset.json"):
        load_dataset(tmp_path)
    (tmp_path / "dataset.json").write_text('{"labels": {"0": "background",}')
    with pytest.raises(DatasetError, match="not valid JSON.*line 1"):
        load_dataset(tmp_path)
    (tmp_path / "dataset.json").write_text("[1, 2]")
    with pytest.raises(FedSegError, match="must hold a JSON object"):
        load_dataset(tmp_path)


def test_case_ids_drop_the_image_suffix():
    assert case_id_of("imagesTr/liver_003.nii.gz") == "liver_003"
    assert case_id_of(Path("scan.v2.nrrd")) == "scan.v2"
    assert case_id_of("series/IM0001") == "IM0001"
