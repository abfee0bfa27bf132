"""Local training from the GUI: a real `fedseg train` child process on a tiny dataset drives the
progress bar and the curves through its events; stop saves, resume continues to the end."""

import pytest

from app.models.training import JobState
from segmentation.synth import generate_dataset


@pytest.fixture
def tiny_dataset(tmp_path):
    return generate_dataset(tmp_path / "site-ct", "ct", 2, 0, size=32).root


def test_train_stop_and_resume_update_progress_and_curves(qtbot, window, tiny_dataset, tmp_path):
    page = window.navigate("training")
    model = window.workbench.training
    page.set_dataset(tiny_dataset)
    page.out.set_path(tmp_path / "run")
    page.channels.setText("8,16")
    page.image_size.setCurrentIndex(page.image_size.findData("64"))
    page.batch_size.setValue(16)
    page.epochs.setValue(3)
    assert page.start.isEnabled() and not page.resume.isEnabled() and not page.stop.isEnabled()
    page.start.click()
    assert model.state is JobState.STARTING and page.stop.isEnabled() and not page.start.isEnabled()
    qtbot.waitUntil(lambda: bool(model.curves.epoch_loss), timeout=120_000)  # the window stays live
    assert 0 < page.bar.value() < 1000 and page.tile_epoch.value.text().endswith("/ 3")
    page.stop.click()
    assert model.state is JobState.STOPPING
    qtbot.waitUntil(lambda: model.state is JobState.STOPPED and not page.timer.isActive(), timeout=120_000)
    stopped_at = model.epoch
    assert stopped_at in (1, 2) and page.resume.isEnabled() and (tmp_path / "run" / "model.pt").is_file()
    page.resume.click()
    qtbot.waitUntil(lambda: model.state is JobState.FINISHED and not page.timer.isActive(), timeout=120_000)
    assert page.bar.value() == 1000 and page.tile_epoch.value.text() == "3 / 3"
    assert [epoch for epoch, _ in model.curves.epoch_loss] == [1, 2, 3]  # earlier session's epochs kept
    loss_lines = page.curves.loss_axes.get_lines()
    assert loss_lines and len(loss_lines[-1].get_xdata()) == 3
    dice_labels = [line.get_label() for line in page.curves.dice_axes.get_lines()]
    assert dice_labels == ["liver", "kidney", "spleen", "pancreas", "mean"]
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
