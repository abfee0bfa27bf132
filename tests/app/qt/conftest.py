"""The workbench under pytest-qt, offscreen: a main window with its own settings file and workspace."""

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import SimpleITK as sitk  # noqa: E402
from pydicom.uid import generate_uid  # noqa: E402


@pytest.fixture
def window(qtbot, tmp_path):
    """The main window on the home page; its child processes are stopped afterwards."""
    from app.qt.application import create_application
    from app.qt.main_window import MainWindow
    from app.services.settings import SettingsStore
    from app.services.workbench import Workbench

    create_application()
    workbench = Workbench(SettingsStore(tmp_path / "config" / "settings.toml"))
    workbench.settings.workspace = str(tmp_path / "workspace")
    main = MainWindow(workbench)
    qtbot.addWidget(main)
    main.show()
    yield main
    for page in main.pages.values():
        if hasattr(page, "confirm_close"):  # closing after the test asks no question (unsaved data, a server)
            page.confirm_close = lambda: True
        owners = (page, getattr(page, "session", None), getattr(page, "demo", None))  # the pages' controllers
        for job in (getattr(owner, "job", None) for owner in owners):
            if job is not None and hasattr(job, "kill"):
                job.kill()


@pytest.fixture
def error_dialogs():
    """error_dialogs(widget): the error message boxes shown over `widget`."""
    from PySide6.QtWidgets import QMessageBox

    def find(widget):
        return [box for box in widget.findChildren(QMessageBox) if box.objectName() == "ErrorDialog"]

    return find


@pytest.fixture
def dicom_series_writer():
    return write_dicom_series


def write_dicom_series(folder: Path, array: np.ndarray, description: str, modality: str = "CT") -> str:
    """One single-frame DICOM file per slice of a (z, y, x) int16 array; returns the series UID."""
    folder.mkdir(parents=True, exist_ok=True)
    image = sitk.GetImageFromArray(array.astype(np.int16))
    image.SetSpacing((1.0, 1.0, 2.0))
    uid = generate_uid(entropy_srcs=[description])
    tags = {"0008|0016": "1.2.840.10008.5.1.4.1.1.2", "0008|0060": modality, "0008|103e": description,
            "0020|000e": uid, "0020|000d": generate_uid(entropy_srcs=["study"]),
            "0020|0037": "1\\0\\0\\0\\1\\0", "0028|1052": "0", "0028|1053": "1"}
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    for k in range(image.GetDepth()):
        plane = image[:, :, k]
        for tag, value in tags.items():
            plane.SetMetaData(tag, value)
        plane.SetMetaData("0020|0032", "0\\0\\" + f"{2.0 * k:.1f}")
        plane.SetMetaData("0020|0013", str(k + 1))
        plane.SetMetaData("0008|0018", generate_uid(entropy_srcs=[uid, str(k)]))
        writer.SetFileName(str(folder / f"{description}_{k:03d}.dcm"))
        writer.Execute(plane)
    return uid


class Questions:
    """Answers for the next questions (button texts, in order) and the texts of those asked."""

    def __init__(self) -> None:
        self.answers: list[str] = []
        self.asked: list[str] = []


@pytest.fixture
def questions(monkeypatch):
    """Modal questions (QMessageBox.exec) answered by clicking the button named in `answers` (Cancel once
    they are used up: an unexpected question fails the test's asserts, not the Qt event loop)."""
    from PySide6.QtWidgets import QMessageBox

    recorded = Questions()

    def answer(box) -> int:
        recorded.asked.append(box.text())
        wanted = recorded.answers.pop(0) if recorded.answers else "Cancel"
        next(button for button in box.buttons() if button.text().replace("&", "") == wanted).click()
        return 0

    monkeypatch.setattr(QMessageBox, "exec", answer)
    return recorded
