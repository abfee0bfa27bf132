"""The dataset draft without Qt: what counts as an unsaved edit, when saving must ask before replacing a
dataset.json, that a replaced file is kept byte for byte, where dialogs start, and DICOM series as cases
(modality warnings included)."""

import json
import os
from pathlib import Path

import numpy as np
import pytest

import segmentation.datalist
from app.models.dataset import TRAINING, VALIDATION, CaseCheck, CaseRow, DatasetDraft, modality_warning
from app.models.study import Study
from app.models.viewer import ViewerModel
from app.services.datasets import (
    check_case,
    open_study_case,
    read_dataset_folder,
    replacing_needs_asking,
    save_dataset,
    series_row,
    start_folder,
)
from segmentation.datalist import load_dataset
from segmentation.errors import DatasetError
from segmentation.io import write_volume
from segmentation.io.dicom_writer import derived_uid, write_dicom_series
from segmentation.volume import Volume

LABELS = {0: "background", 1: "liver"}


def _pair(folder: Path, name: str, value: int = 1) -> tuple[Path, Path]:
    """A 3 x 6 x 5 image and a label map with 4 voxels of `value`, both NIfTI."""
    array = np.zeros((3, 6, 5), np.int16)
    label = np.zeros((3, 6, 5), np.uint8)
    label[1, 2:4, 1:3] = value
    image = write_volume(Volume(array, spacing=(1.0, 1.0, 2.0)), folder / "images" / f"{name}.nii.gz")
    return image, write_volume(Volume(label, spacing=(1.0, 1.0, 2.0)), folder / "labels" / f"{name}.nii.gz")


def _series(folder: Path, modality: str, description: str) -> str:
    """A 4-slice DICOM series of a 4 x 6 x 5 volume written into the new folder `folder`; its UID."""
    array = np.arange(4 * 6 * 5, dtype=np.int16).reshape(4, 6, 5)
    uid = derived_uid("test-series", description)
    write_dicom_series(Volume(array, spacing=(0.5, 0.5, 3.0), modality=modality), folder,
                       series_description=description, patient_id="anon", patient_name="anon",
                       study_uid=derived_uid("test-study"), series_uid=uid,
                       frame_of_reference_uid=derived_uid("test-frame"))
    return uid


def _saved_draft(root: Path) -> DatasetDraft:
    draft = DatasetDraft()
    draft.load(None, "liver", "ct", LABELS, [])
    draft.add_pairs([_pair(root, "case_0"), _pair(root, "case_1")])
    save_dataset(draft, root)
    return draft


def test_every_edit_makes_the_draft_dirty_and_opening_or_saving_clears_it():
    draft = DatasetDraft()
    emitted = []
    draft.changed.connect(lambda: emitted.append(1))
    assert not draft.dirty and not draft.has_unsaved_changes
    case = CaseRow(Path("/data/a.nii.gz"), Path("/data/la.nii.gz"))
    draft.load(Path("/data"), "liver", "ct", LABELS, [case])
    assert not draft.dirty and len(emitted) == 1
    no_ops = [lambda: draft.set_name("liver"), lambda: draft.set_modality("ct"),
              lambda: draft.set_labels(LABELS), lambda: draft.add_pairs([(Path("/data/a.nii.gz"), None)]),
              lambda: draft.remove([]), lambda: draft.split(0.0), lambda: draft.set_check(0, CaseCheck())]
    for no_op in no_ops:
        no_op()
        assert not draft.dirty
    edits = [lambda: draft.add_pairs([(Path("/data/b.nii.gz"), Path("/data/lb.nii.gz"))]),
             lambda: draft.split(0.5), lambda: draft.set_modality("mr"), lambda: draft.set_name("kidney"),
             lambda: draft.set_labels({0: "background", 1: "kidney"}), lambda: draft.remove([0])]
    for edit in edits:
        draft.mark_saved(Path("/elsewhere"))
        assert not draft.dirty and draft.root == Path("/elsewhere")
        edit()
        assert draft.dirty and draft.has_unsaved_changes
    draft.reset()
    assert (draft.root, draft.rows, draft.name, draft.labels, draft.dirty) == (None, [], "site dataset",
                                                                              {0: "background"}, False)


def test_a_draft_with_nothing_to_save_loses_nothing_when_dropped():
    draft = DatasetDraft()
    draft.set_name("renamed")
    assert draft.dirty and not draft.has_unsaved_changes


def test_the_same_case_is_added_once_and_a_series_of_a_folder_is_its_own_case():
    draft = DatasetDraft()
    folder = Path("/dicom/study")
    draft.add_cases([CaseRow(folder, None, series_uid="1.2"), CaseRow(folder, None, series_uid="1.3"),
                     CaseRow(folder, None, series_uid="1.2")])
    assert [row.series_uid for row in draft.rows] == ["1.2", "1.3"]


def test_modality_warnings_compare_ct_with_mr_only():
    assert modality_warning("ct", "mr") == "looks like MR but the dataset is tagged CT"
    assert modality_warning("mr-t1", "ct") == "looks like CT but the dataset is tagged MR T1"
    assert modality_warning("mr-t1", "mr") == modality_warning("ct", "ct") == ""
    assert modality_warning("ct", "unknown") == modality_warning("unknown", "mr") == ""
    draft = DatasetDraft()
    draft.add_cases([CaseRow(Path("/a"), None), CaseRow(Path("/b"), None, check=CaseCheck(modality="mr")),
                     CaseRow(Path("/c"), None, check=CaseCheck("unreadable", modality="mr"))])
    assert [draft.check_text(row) for row in draft.rows] == [
        "checking…", "looks like MR but the dataset is tagged CT", "unreadable"]
    draft.set_modality("mr-t2")
    assert draft.check_text(draft.rows[1]) == "OK"


def test_saving_asks_only_when_replacing_another_datasets_file(tmp_path):
    first, second = tmp_path / "ct-site", tmp_path / "mr-site"
    draft = _saved_draft(first)
    assert not replacing_needs_asking(draft, first)  # its own file
    assert not replacing_needs_asking(draft, tmp_path / "empty")
    assert not replacing_needs_asking(DatasetDraft(), tmp_path / "empty")
    _saved_draft(second)
    assert replacing_needs_asking(draft, second)
    assert replacing_needs_asking(DatasetDraft(), first)  # a new draft owns no file
    link = tmp_path / "link-to-ct-site"
    link.symlink_to(first, target_is_directory=True)
    assert not replacing_needs_asking(draft, link)  # the same file by another name
    (first / "dataset.json").unlink()
    (first / "dataset.json").write_text("{}", encoding="utf-8")  # the file is still the draft's folder's
    assert not replacing_needs_asking(draft, first)


def test_a_replaced_dataset_json_is_kept_byte_for_byte_and_never_over_an_earlier_backup(tmp_path):
    root = tmp_path / "site"
    draft = _saved_draft(root)
    index = root / "dataset.json"
    first_bytes = index.read_bytes()
    assert not draft.dirty and draft.root == root
    assert sorted(path.name for path in root.iterdir()) == ["dataset.json", "images", "labels"]
    draft.split(0.5)
    saved = save_dataset(draft, root)
    assert saved.path == index and saved.backup.parent == root
    assert saved.backup.name.startswith("dataset.json.backup-")
    assert saved.backup.read_bytes() == first_bytes
    assert str(saved.backup) in saved.describe()
    assert (len(load_dataset(root).training), len(load_dataset(root).test)) == (1, 1)
    second_bytes = index.read_bytes()
    draft.set_modality("mr")
    again = save_dataset(draft, root)  # within the same second: a new name, the first backup untouched
    assert again.backup != saved.backup and again.backup.read_bytes() == second_bytes
    assert saved.backup.read_bytes() == first_bytes
    assert json.loads(index.read_text())["fedseg"]["modality"] == "mr"


def test_a_failed_write_puts_the_old_file_back(tmp_path, monkeypatch):
    root = tmp_path / "site"
    draft = _saved_draft(root)
    before = (root / "dataset.json").read_bytes()
    draft.set_name("renamed")

    def full_disk(*_args, **_kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(segmentation.datalist, "write_dataset_json", full_disk)
    with pytest.raises(OSError):
        save_dataset(draft, root)
    assert (root / "dataset.json").read_bytes() == before
    assert sorted(path.name for path in root.iterdir()) == ["dataset.json", "images", "labels"]
    assert draft.dirty


def test_a_draft_that_cannot_be_saved_touches_nothing(tmp_path):
    root = tmp_path / "site"
    _saved_draft(root)
    before = (root / "dataset.json").read_bytes()
    unlabeled = DatasetDraft()
    unlabeled.add_pairs([(root / "images" / "case_0.nii.gz", None)])
    with pytest.raises(DatasetError, match="no label besides the background"):
        save_dataset(unlabeled, root)
    unlabeled.set_labels(LABELS)
    with pytest.raises(DatasetError, match="need a label file"):
        save_dataset(unlabeled, root)
    with pytest.raises(DatasetError, match="no cases"):
        save_dataset(DatasetDraft(), root)
    assert (root / "dataset.json").read_bytes() == before and len(list(root.iterdir())) == 3


def test_dialogs_start_in_the_drafts_folder_then_a_recent_dataset_then_the_workspace(tmp_path, monkeypatch):
    draft_root, recent, workspace = (tmp_path / name for name in ("draft", "recent", "workspace"))
    for folder in (draft_root, recent, workspace):
        folder.mkdir()
    gone = str(tmp_path / "deleted")
    assert start_folder(draft_root, [gone, str(recent)], workspace) == draft_root
    assert start_folder(None, [gone, str(recent)], workspace) == recent
    assert start_folder(tmp_path / "draft-gone", [gone], workspace) == workspace
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert start_folder(None, ["recent"], tmp_path / "no-workspace") == tmp_path / "home"  # never the cwd


def test_a_dicom_series_case_keeps_its_uid_only_in_a_folder_of_several():
    folder = Path("/dicom/study")
    assert series_row(folder, ["1.2"], None, None) == CaseRow(folder, None)
    assert series_row(folder, ["1.2"], "1.2", Path("/l.nii.gz")) == CaseRow(folder, Path("/l.nii.gz"))
    assert series_row(folder, ["1.2", "1.3"], "1.3", None) == CaseRow(folder, None, series_uid="1.3")
    with pytest.raises(DatasetError, match="holds 2 series"):
        series_row(folder, ["1.2", "1.3"], None, None)


def test_checking_a_dicom_series_reads_the_folder_and_warns_about_its_modality(tmp_path):
    study = tmp_path / "study"
    mr_uid = _series(study / "mr", "mr", "T1 axial")
    _series(study / "ct", "ct", "CT abdomen")
    label = np.zeros((4, 6, 5), np.uint8)
    label[2, 1:3, 1:4] = 1
    label_path = write_volume(Volume(label, spacing=(0.5, 0.5, 3.0)), tmp_path / "mr_label.nii.gz")
    ambiguous = check_case(study, label_path, LABELS)
    assert "2 series" in ambiguous.problem
    check = check_case(study, label_path, LABELS, mr_uid)
    assert check.ok and check.modality == "mr"
    assert (check.size, check.spacing, check.label_voxels) == ((5, 6, 4), (0.5, 0.5, 3.0), {0: 114, 1: 6})
    alone = check_case(study / "mr", None, LABELS)
    assert alone.problem.startswith("no label file") and alone.modality == "mr" and alone.size == (5, 6, 4)
    draft = DatasetDraft()
    draft.set_labels(LABELS)
    draft.add_cases([CaseRow(study, label_path, check=check, series_uid=mr_uid)])
    assert draft.check_text(draft.rows[0]) == "looks like MR but the dataset is tagged CT"
    save_dataset(draft, tmp_path)
    entry = json.loads((tmp_path / "dataset.json").read_text())["training"][0]
    assert entry == {"image": "./study", "label": "./mr_label.nii.gz", "series_uid": mr_uid}
    *_, rows = read_dataset_folder(tmp_path)
    assert [(row.image, row.label, row.series_uid) for row in rows] == [(study, label_path, mr_uid)]


def test_the_viewers_study_becomes_a_case_with_the_label_file_it_was_read_with(tmp_path):
    viewer = ViewerModel()
    with pytest.raises(DatasetError, match="no study is open"):
        open_study_case(viewer)
    image, label = _pair(tmp_path / "msd", "liver_7")
    elsewhere = tmp_path / "corrections" / "liver_7-edited.nii.gz"  # a label file from anywhere
    elsewhere.parent.mkdir()
    os.rename(label, elsewhere)
    volume = Volume(np.zeros((3, 6, 5), np.int16), spacing=(1.0, 1.0, 2.0))
    labels = Volume(np.zeros((3, 6, 5), np.uint8), spacing=(1.0, 1.0, 2.0))
    viewer.set_study(Study(volume, image, image.name))
    viewer.set_labels(labels, elsewhere.name, elsewhere)
    assert open_study_case(viewer) == (image, elsewhere, None)
    viewer.set_labels(labels, "prediction of model.pt")
    assert open_study_case(viewer) == (image, None, None)
    folder = tmp_path / "series"
    viewer.set_study(Study(volume, folder, "CT", series_uid="1.2.3"))
    folder.mkdir()
    assert open_study_case(viewer) == (folder, None, "1.2.3")


def test_saved_cases_point_at_their_files_relative_to_the_folder(tmp_path):
    root = tmp_path / "site"
    outside = _pair(tmp_path / "elsewhere", "case_9")
    draft = _saved_draft(root)
    draft.add_pairs([outside])
    draft.split(0.34)
    save_dataset(draft, root)
    data = json.loads((root / "dataset.json").read_text())
    assert data["training"][0] == {"image": "./images/case_0.nii.gz", "label": "./labels/case_0.nii.gz"}
    assert data["test"] == [{"image": str(outside[0]), "label": str(outside[1])}]
    assert [row.split for row in draft.rows] == [TRAINING, TRAINING, VALIDATION]


def test_a_new_dataset_takes_its_labels_from_its_label_files_and_an_opened_one_flags_others(tmp_path):
    blank = Volume(np.zeros((2, 8, 8), np.float32), spacing=(1.0, 1.0, 2.0))
    image = write_volume(blank, tmp_path / "a.nii.gz")
    array = np.zeros((2, 8, 8), np.uint8)
    array[0, :2], array[1, 4:] = 1, 3
    named = Volume(array, spacing=(1.0, 1.0, 2.0), labels={0: "background", 1: "liver", 3: "spleen"})
    label = write_volume(named, tmp_path / "a.seg.nrrd")  # a Slicer segmentation names its segments
    draft = DatasetDraft()
    draft.add_pairs([(image, label)])
    check = check_case(image, label, None if draft.adopts_labels else draft.labels)
    assert check.ok and check.label_names == {1: "liver", 3: "spleen"}
    draft.set_check(0, check)
    assert draft.labels == {0: "background", 1: "liver", 3: "spleen"}
    assert draft.check_text(draft.rows[0]) == "OK"
    opened = DatasetDraft()
    opened.load(tmp_path, "liver only", "ct", {0: "background", 1: "liver"}, [CaseRow(image, label)])
    assert not opened.adopts_labels
    check = check_case(image, label, opened.labels)
    opened.set_check(0, check)
    assert opened.labels == {0: "background", 1: "liver"}
    assert opened.check_text(opened.rows[0]) == "label values [3] are not in the dataset's labels"
