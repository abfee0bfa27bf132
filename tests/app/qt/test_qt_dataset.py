"""The dataset page loses nothing: saving over another dataset's dataset.json asks (Cancel leaves it byte
for byte, Replace keeps it as a backup), Save as writes elsewhere, New and closing ask about unsaved
changes, a DICOM series (one of several in a folder) and the viewer's study become cases, and the Check
column shows a long problem in full."""

import json
from pathlib import Path

import numpy as np
import pytest
from PySide6.QtCore import QRect, Qt
from PySide6.QtWidgets import QFileDialog, QMessageBox

from app.models.dataset import CaseCheck
from app.models.study import Study
from segmentation.datalist import load_dataset
from segmentation.io import read_volume, write_volume
from segmentation.synth import generate_dataset
from segmentation.volume import Volume


class Dialogs:
    """Scripted answers for the page's questions and file dialogs, and a record of what was asked. A
    question with no answer left is answered Cancel."""

    def __init__(self, monkeypatch) -> None:
        self.asked: list[str] = []
        self.answers: list[str] = []  # button texts, in the order the questions come
        self.folders: list[str] = []  # what folder dialogs return, in order ("" cancels)
        self.files: list[str] = []
        self.starts: list[str] = []
        monkeypatch.setattr(QMessageBox, "exec", lambda box: self._exec(box))
        monkeypatch.setattr(QFileDialog, "getExistingDirectory", self._folder)
        monkeypatch.setattr(QFileDialog, "getOpenFileName", self._file)

    def _exec(self, box):
        self.asked.append(f"{box.windowTitle()}: {box.text()}")
        answer = self.answers.pop(0) if self.answers else "Cancel"
        next(button for button in box.buttons() if button.text().replace("&", "") == answer).click()
        return 0

    def _folder(self, _parent, _caption, start):
        self.starts.append(start)
        return self.folders.pop(0)

    def _file(self, _parent, _caption, start, _filters):
        self.starts.append(start)
        return self.files.pop(0), ""


@pytest.fixture
def dialogs(monkeypatch):
    return Dialogs(monkeypatch)


@pytest.fixture
def page(window, dialogs):
    return window.navigate("dataset")


def _checked(page) -> bool:
    """Every case is checked and the checking worker is done (so no worker outlives the test)."""
    done = page.check_status.text().startswith("Checked")
    return done and all(row.check is not None for row in page.draft.rows)


def _open_checked(qtbot, page, root: Path) -> None:
    page.open_dataset(root)
    qtbot.waitUntil(lambda: _checked(page), timeout=30_000)


def _label_map(out: Path) -> Path:
    """A label map on the grid of the 4 x 6 x 5 series the DICOM test writes, with 6 voxels of liver."""
    label = np.zeros((4, 6, 5), np.uint8)
    label[1, 2:4, 1:4] = 1
    return write_volume(Volume(label, spacing=(1.0, 1.0, 2.0)), out)


def test_saving_over_another_datasets_file_asks_and_keeps_it(qtbot, window, page, dialogs, tmp_path):
    ct = generate_dataset(tmp_path / "ct-site", "ct", 2, 0, size=16, test_fraction=0).root
    mr = generate_dataset(tmp_path / "mr-site", "mr-t1", 2, 1, size=16, test_fraction=0).root
    original = (ct / "dataset.json").read_bytes()
    _open_checked(qtbot, page, mr)
    dialogs.folders = [str(ct), str(ct)]
    dialogs.answers = ["Cancel"]
    assert not page.save_as()
    assert dialogs.asked == [f"Replace dataset.json?: {ct} already holds the dataset.json of another "
                             "dataset. Replace it? The old file is kept beside it under a new name."]
    assert (ct / "dataset.json").read_bytes() == original
    assert not [path for path in ct.iterdir() if path.name.startswith("dataset.json.")]
    assert page.draft.root == mr
    dialogs.answers = ["Replace"]
    assert page.save_as()
    (backup,) = [path for path in ct.iterdir() if path.name.startswith("dataset.json.")]
    assert backup.read_bytes() == original
    assert json.loads((ct / "dataset.json").read_text())["fedseg"]["modality"] == "mr-t1"
    assert window.status.text() == f"Wrote {ct / 'dataset.json'}; the previous one is kept as {backup}"
    assert page.draft.root == ct and not page.draft.dirty
    assert (mr / "dataset.json").is_file() and len(list(mr.glob("dataset.json*"))) == 1
    assert dialogs.starts[0] == str(mr)  # the draft's own folder


def test_save_writes_its_own_file_with_a_backup_and_save_as_writes_elsewhere(qtbot, window, page, dialogs,
                                                                               tmp_path):
    root = generate_dataset(tmp_path / "site", "ct", 3, 0, size=16).root
    original = (root / "dataset.json").read_bytes()
    _open_checked(qtbot, page, root)
    assert not page.save_button.isEnabled() and page.save_as_button.isEnabled()
    page.draft.split(0.67)
    assert page.folder.text() == f"{root} (unsaved changes)"
    page.save_button.click()  # its own file: no question, the old one kept
    assert dialogs.asked == []
    (backup,) = root.glob("dataset.json.backup-*")
    assert backup.read_bytes() == original and json.loads((root / "dataset.json").read_text())["numTest"] == 2
    assert page.folder.text() == str(root) and not page.save_button.isEnabled()  # nothing new to save
    elsewhere = tmp_path / "copy"
    dialogs.folders = [str(elsewhere)]
    page.save_as_button.click()
    saved = json.loads((elsewhere / "dataset.json").read_text())
    first_image = str(root / "imagesTr" / "synth_ct_000.nii.gz")  # outside the new folder: absolute
    assert saved["numTest"] == 2 and saved["training"][0]["image"] == first_image
    assert page.draft.root == elsewhere and window.workbench.settings.recent_datasets[0] == str(elsewhere)
    assert sorted(path.name for path in elsewhere.iterdir()) == ["dataset.json"]


def test_new_and_closing_ask_about_unsaved_changes(qtbot, page, dialogs, tmp_path):
    root = generate_dataset(tmp_path / "site", "ct", 2, 0, size=16).root
    _open_checked(qtbot, page, root)
    assert page.confirm_close() and dialogs.asked == []  # nothing changed: nothing to ask
    page.name.setText("renamed")
    assert page.draft.dirty
    dialogs.answers = ["Cancel"]
    page.new_button.click()
    assert page.draft.root == root and page.draft.name == "renamed" and len(dialogs.asked) == 1
    assert dialogs.asked[0].startswith("Unsaved changes: The dataset “renamed” has changes")
    dialogs.answers = ["Discard"]
    page.new_button.click()
    assert (page.draft.root, page.draft.rows, page.name.text()) == (None, [], "site dataset")
    assert json.loads((root / "dataset.json").read_text())["name"] != "renamed"
    _open_checked(qtbot, page, root)
    page.draft.remove([0])
    dialogs.answers = ["Save"]
    assert page.confirm_close()  # Save writes the draft's own file, then the window may close
    saved = json.loads((root / "dataset.json").read_text())
    assert (saved["numTraining"], saved["numTest"]) == (0, 1) and not page.draft.dirty
    page.new_button.click()  # saved: no question
    assert len(dialogs.asked) == 3
    page.add_pairs([(root / "imagesTr" / "synth_ct_000.nii.gz", root / "labelsTr" / "synth_ct_000.nii.gz")])
    qtbot.waitUntil(lambda: _checked(page), timeout=30_000)
    dialogs.answers = ["Cancel"]
    page.open_dataset(root)  # opening another dataset asks too
    assert len(dialogs.asked) == 4 and page.draft.root is None and len(page.draft.rows) == 1
    dialogs.answers, dialogs.folders = ["Save"], [""]  # Save on a new draft is Save as; its folder cancelled
    assert not page.confirm_close()
    assert len(page.draft.rows) == 1 and page.draft.dirty and len(dialogs.asked) == 5


def test_a_dicom_series_of_a_folder_of_several_is_a_case(qtbot, page, dialogs, tmp_path, dicom_series_writer):
    study = tmp_path / "study"
    volume = np.arange(4 * 6 * 5, dtype=np.int16).reshape(4, 6, 5)
    dicom_series_writer(study / "ct", volume, "CT abdomen", "CT")
    mr_uid = dicom_series_writer(study / "mr", volume, "T1 axial", "MR")
    label = _label_map(tmp_path / "labels" / "t1.nii.gz")
    page.draft.set_labels({0: "background", 1: "liver"})
    dialogs.folders, dialogs.files = [str(study)], [str(label)]
    page.add_series_button.click()
    qtbot.waitUntil(lambda: page.picker is not None and page.picker.isVisible(), timeout=30_000)
    titles = [page.picker.table.item(row, 0).text() for row in range(page.picker.table.rowCount())]
    page.picker.table.selectRow(titles.index("T1 axial"))
    page.picker.accept()
    qtbot.waitUntil(lambda: len(page.draft.rows) == 1 and _checked(page), timeout=30_000)
    row = page.draft.rows[0]
    assert (row.image, row.label, row.series_uid) == (study, label, mr_uid)
    assert row.check.ok and row.check.label_voxels == {0: 114, 1: 6}
    assert page.table.item(0, 6).text() == "looks like MR but the dataset is tagged CT"
    page.modality.setCurrentIndex(page.modality.findData("mr-t1"))
    assert page.table.item(0, 6).text() == "OK"
    dialogs.folders, dialogs.files = [str(study / "ct")], [""]
    page.add_series_button.click()
    qtbot.waitUntil(lambda: len(page.draft.rows) == 2 and _checked(page), timeout=30_000)
    assert (page.draft.rows[1].series_uid, page.draft.rows[1].label) == (None, None)  # one series: no UID
    assert page.draft.rows[1].check.problem.startswith("no label file")
    page.draft.remove([1])
    dialogs.folders = [str(tmp_path)]
    assert page.save_as()
    saved = json.loads((tmp_path / "dataset.json").read_text())
    assert saved["training"] == [{"image": "./study", "label": "./labels/t1.nii.gz", "series_uid": mr_uid}]
    page.draft.remove([0])  # the viewer's MR series comes back with its UID, with no question
    page.workbench.viewer.set_study(Study(read_volume(study, mr_uid), study, "T1 axial", series_uid=mr_uid))
    page.add_study_button.click()
    qtbot.waitUntil(lambda: len(page.draft.rows) == 1 and _checked(page), timeout=30_000)
    assert (page.draft.rows[0].image, page.draft.rows[0].series_uid) == (study, mr_uid)


def test_the_study_open_in_the_viewer_is_added_with_its_labels(qtbot, window, page, tmp_path):
    root = generate_dataset(tmp_path / "site", "ct", 2, 0, size=16, test_fraction=0).root
    image, label = root / "imagesTr" / "synth_ct_001.nii.gz", root / "labelsTr" / "synth_ct_001.nii.gz"
    assert not page.add_study_button.isEnabled()
    window.open_study(image)
    viewer = window.workbench.viewer
    qtbot.waitUntil(lambda: viewer.has_study and viewer.has_labels, timeout=30_000)
    page = window.navigate("dataset")
    assert page.add_study_button.isEnabled()
    page.draft.set_labels(load_dataset(root).labels)
    page.add_study_button.click()
    qtbot.waitUntil(lambda: len(page.draft.rows) == 1 and _checked(page), timeout=30_000)
    row = page.draft.rows[0]
    assert (row.image, row.label, row.check.ok) == (image, label, True)
    assert page.draft.dirty


def test_the_check_column_shows_a_long_problem_in_full(qtbot, page):
    from PySide6.QtGui import QFontMetrics

    folder = "/hospital/archive/2026/radiology/ct_abdomen_series_with_a_long_name"
    page.draft.add_pairs([(Path(f"{folder}/case_0001.nii.gz"), Path(f"{folder}/labels/case_0001.nii.gz"))])
    problem = (f"image {folder}/case_0001.nii.gz and label {folder}/labels/case_0001.nii.gz do not line "
               "up: size (512, 512, 120) differs from (512, 512, 118)")
    page.draft.set_check(0, CaseCheck(problem))
    qtbot.wait(10)
    table, column = page.table, 6
    item = table.item(0, column)
    assert item.toolTip() == item.text() == problem
    right = table.columnViewportPosition(column) + table.columnWidth(column)
    assert right <= table.viewport().width() and table.columnWidth(column) >= table.viewport().width() // 5
    needed = QFontMetrics(table.font()).boundingRect(QRect(0, 0, table.columnWidth(column) - 8, 10_000),
                                                     int(Qt.TextFlag.TextWordWrap), item.text())
    assert needed.width() <= table.columnWidth(column) and needed.height() <= table.rowHeight(0)
