"""Local training from the GUI: a real `fedseg train` child process on a tiny dataset drives the
progress bar, ETA and curves through its events; Stop saves and leaves the run resumable."""

import pytest

from app.models.training import JobState
from segmentation.synth import generate_dataset


@pytest.fixture
def tiny_dataset(tmp_path):
    return generate_dataset(tmp_path / "site-ct", "ct", 2, 0, size=32).root


def test_training_drives_progress_and_curves_and_stops_resumably(qtbot, window, tiny_dataset, tmp_path):
    page = window.navigate("training")
    model = window.workbench.training
    page.set_dataset(tiny_dataset)
    page.out.set_path(tmp_path / "run")
    page.channels.setText("8,16")
    page.image_size.setCurrentIndex(page.image_size.findData("64"))
    page.epochs.setValue(50)
    assert page.start.isEnabled() and not page.resume.isEnabled() and not page.stop.isEnabled()
    page.start.click()
    assert model.state is JobState.STARTING and page.stop.isEnabled() and not page.start.isEnabled()
    qtbot.waitUntil(lambda: len(model.curves.epoch_loss) >= 2, timeout=120_000)  # the window stays live
    assert 0 < page.bar.value() < 1000 and page.tile_epoch.value.text().endswith("/ 50")
    assert page.tile_eta.value.text() != "—"  # two steps timed
    loss_lines = page.curves.loss_axes.get_lines()
    assert [line.get_label() for line in loss_lines] == ["step", "epoch"]
    assert len(loss_lines[1].get_xdata()) >= 2
    dice_labels = [line.get_label() for line in page.curves.dice_axes.get_lines()]
    assert dice_labels == ["liver", "kidney", "spleen", "pancreas", "mean"]
    page.stop.click()
    assert model.state is JobState.STOPPING
    qtbot.waitUntil(lambda: model.state is JobState.STOPPED and not page.timer.isActive(), timeout=120_000)
    assert "resume" in model.message and page.resume.isEnabled() and page.start.isEnabled()
    assert (tmp_path / "run" / "model.pt").is_file()
    assert window.workbench.settings.recent_datasets[0] == str(tiny_dataset)
    assert window.workbench.settings.last_checkpoint == str(tmp_path / "run" / "model.pt")


def test_a_run_folder_that_holds_a_run_is_refused_with_a_dialog(qtbot, window, tiny_dataset, tmp_path,
                                                                  error_dialogs):
    page = window.navigate("training")
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "model.pt").write_bytes(b"")
    page.set_dataset(tiny_dataset)
    page.out.set_path(tmp_path / "run")
    page.start.click()
    dialogs = error_dialogs(page)
    assert dialogs and "already holds a run" in dialogs[0].text()
    assert page.job is None and window.workbench.training.state is JobState.IDLE
