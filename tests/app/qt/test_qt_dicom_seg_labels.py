"""The viewer's Labels action with a DICOM-SEG: it overlays the open series it segments, and over another
series it gives a one-sentence dialog and no overlay."""

import numpy as np

from segmentation.export import write_dicom_seg
from segmentation.io.dicom import read_dicom_series
from segmentation.io.dicom_writer import derived_uid, write_dicom_series
from segmentation.volume import Volume


def _write_two_series(tmp_path):
    """The same CT as two series ('first', 'second'), and a SEG of the first one's known label map."""
    ct = Volume(np.random.default_rng(0).integers(-500, 500, size=(3, 6, 8)).astype(np.int16),
                spacing=(1.0, 1.0, 2.0), modality="ct")
    for name in ("first", "second"):
        write_dicom_series(ct, tmp_path / name, series_description=name, patient_id="P", patient_name="A^B",
                           study_uid=derived_uid("study"), series_uid=derived_uid(name),
                           frame_of_reference_uid=derived_uid("frame"))
    label = np.zeros(ct.shape, np.uint8)
    label[1, 2:5, 3:7] = 1
    label[2, 0, 0] = 2
    mask = ct.with_array(label, labels={1: "liver", 2: "spleen"})
    return label, write_dicom_seg(mask, read_dicom_series(tmp_path / "first").datasets, tmp_path / "seg.dcm")


def test_a_dicom_seg_overlays_its_series_and_is_refused_over_another(qtbot, window, tmp_path, error_dialogs):
    label, seg = _write_two_series(tmp_path)
    viewer = window.workbench.viewer
    window.open_study(tmp_path / "first")
    qtbot.waitUntil(lambda: viewer.has_study, timeout=30_000)
    page = window.pages["viewer"]
    page.opener.open_labels(seg)
    qtbot.waitUntil(lambda: viewer.has_labels, timeout=30_000)
    np.testing.assert_array_equal(viewer.label_volume.array, label)
    legend = page.overlay_panel.legend
    assert [legend.item(i).text() for i in range(legend.count())] == ["liver", "spleen"]

    window.open_study(tmp_path / "second")
    qtbot.waitUntil(lambda: viewer.study is not None and viewer.study.name == "second", timeout=30_000)
    page.opener.open_labels(seg)
    qtbot.waitUntil(lambda: bool(error_dialogs(page)), timeout=30_000)
    text = error_dialogs(page)[0].text()
    assert "seg.dcm segments series" in text and derived_uid("second") in text and "\n" not in text
    assert not viewer.has_labels
