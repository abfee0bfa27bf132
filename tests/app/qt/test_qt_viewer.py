"""The study viewer: real studies open and render with their overlay; mouse input changes slice,
window and zoom; series picker; a corrupt file gives a dialog and the app carries on."""

import numpy as np
from PySide6.QtCore import QPoint, QPointF, Qt
from PySide6.QtGui import QWheelEvent

from app.models.orientation import ViewAxis
from app.services.demo import chest_ct_files


def open_and_wait(qtbot, window, path, labels=None, modality=None):
    viewer = window.workbench.viewer
    window.open_study(path, labels, modality)
    qtbot.waitUntil(lambda: viewer.has_study and (labels is None or viewer.has_labels), timeout=30_000)
    return window.pages["viewer"]


def test_chest_ct_opens_with_its_labels_overlaid(qtbot, window):
    ct, segmentation = chest_ct_files()
    page = open_and_wait(qtbot, window, ct, segmentation, modality="ct")
    assert window.current_page == "viewer"
    axial = page.grid.view(ViewAxis.AXIAL)
    gray, overlay = axial.rendered_pixels
    assert gray.shape == (128, 128) and gray.std() > 10
    assert np.count_nonzero(overlay >> 24) > 500  # labelled pixels are drawn with alpha
    legend = page.overlay_panel.legend
    assert [legend.item(i).text() for i in range(2)] == ["ribs", "cervical vertebral column"]
    grabbed = axial.grab().toImage()
    assert grabbed.width() > 100 and grabbed.pixelColor(grabbed.rect().center()).value() > 0
    assert "CTChest4.nrrd" in window.workbench.settings.recent_studies[0]
    page.overlay_panel.visible.setChecked(False)
    assert axial.rendered_pixels[1] is None


def test_window_level_slices_zoom_and_cursor_follow_the_mouse(qtbot, window):
    ct, _ = chest_ct_files()
    page = open_and_wait(qtbot, window, ct, modality="ct")
    viewer = window.workbench.viewer
    view = page.grid.view(ViewAxis.AXIAL)
    before = view.rendered_pixels[0].copy()
    page.presets.activated.emit(page.presets.findText("CT lung"))
    assert viewer.window.level == -600
    assert not np.array_equal(before, view.rendered_pixels[0])
    lung = view.rendered_pixels[0].copy()
    center = view.rect().center()
    qtbot.mousePress(view, Qt.MouseButton.RightButton, pos=center)
    qtbot.mouseMove(view, center + QPoint(40, 20))
    qtbot.mouseRelease(view, Qt.MouseButton.RightButton, pos=center + QPoint(40, 20))
    assert viewer.window.window > 1500 and viewer.window.level < -600
    assert not np.array_equal(lung, view.rendered_pixels[0])
    index = viewer.slice_index(ViewAxis.AXIAL)
    wheel = QWheelEvent(QPointF(center), view.mapToGlobal(QPointF(center)), QPoint(0, 0), QPoint(0, 120),
                        Qt.MouseButton.NoButton, Qt.KeyboardModifier.NoModifier, Qt.ScrollPhase.NoScrollPhase,
                        False)
    view.wheelEvent(wheel)
    assert viewer.slice_index(ViewAxis.AXIAL) == index + 1
    assert page.grid.panels[ViewAxis.AXIAL].slider.value() == index + 1
    view.zoom_at(QPointF(center), 2.0)
    assert view.zoom == 2.0
    qtbot.mouseMove(view, center)
    assert page.readout.text().endswith("HU") or " HU" in page.readout.text()
    page.layout_buttons.buttons()[1].click()  # coronal only
    assert page.grid.layout_name == "coronal" and page.grid.panels[ViewAxis.AXIAL].isHidden()


def test_a_folder_with_two_series_asks_which_one(qtbot, window, tmp_path, dicom_series_writer):
    folder = tmp_path / "dicom"
    dicom_series_writer(folder, np.full((3, 8, 8), 100), "plain")
    wanted = dicom_series_writer(folder, np.arange(4 * 8 * 8).reshape(4, 8, 8), "contrast")
    window.open_study(folder)
    opener = window.pages["viewer"].opener
    qtbot.waitUntil(lambda: opener.picker is not None and opener.picker.isVisible(), timeout=30_000)
    picker = opener.picker
    titles = [picker.table.item(row, 0).text() for row in range(picker.table.rowCount())]
    assert sorted(titles) == ["contrast", "plain"]
    picker.table.selectRow(titles.index("contrast"))
    picker.accept()
    viewer = window.workbench.viewer
    qtbot.waitUntil(lambda: viewer.has_study, timeout=30_000)
    assert viewer.study.series_uid == wanted and viewer.study.is_dicom
    assert viewer.slice_count(ViewAxis.AXIAL) == 4
    assert ("Series", "contrast") in viewer.study.details


def test_a_corrupt_file_gives_a_dialog_and_the_app_carries_on(qtbot, window, tmp_path, error_dialogs):
    broken = tmp_path / "broken.nii.gz"
    broken.write_bytes(b"\x1f\x8b\x08\x00 definitely not a NIfTI volume")
    window.open_study(broken)
    qtbot.waitUntil(lambda: bool(error_dialogs(window.pages["viewer"])), timeout=30_000)
    dialog = error_dialogs(window.pages["viewer"])[0]
    assert dialog.isVisible() and "broken.nii.gz" in dialog.text()
    assert "Traceback" not in dialog.text() and "\n" not in dialog.text()
    assert not window.workbench.viewer.has_study
    dialog.accept()
    ct, _ = chest_ct_files()
    open_and_wait(qtbot, window, ct)
    assert window.workbench.viewer.study.name == "CTChest4.nrrd"


def test_a_series_with_a_missing_slice_opens_only_when_the_user_agrees(qtbot, window, tmp_path,
                                                                       dicom_series_writer):
    folder = tmp_path / "gap"
    dicom_series_writer(folder, np.arange(5 * 8 * 8).reshape(5, 8, 8), "gappy")
    (folder / "gappy_002.dcm").unlink()
    window.open_study(folder)
    opener = window.pages["viewer"].opener
    qtbot.waitUntil(lambda: opener.question is not None and opener.question.isVisible(), timeout=30_000)
    assert "Open it anyway" in opener.question.text() and "allow_irregular" not in opener.question.text()
    assert not window.workbench.viewer.has_study
    opener.question.accept()
    viewer = window.workbench.viewer
    qtbot.waitUntil(lambda: viewer.has_study, timeout=30_000)
    assert viewer.slice_count(ViewAxis.AXIAL) == 4 and viewer.study.image.warnings
    assert any(name == "Warning" for name, _ in viewer.study.details)
