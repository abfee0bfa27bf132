"""Local training from the GUI: a real `fedseg train` child process on a tiny dataset drives the
progress bar, ETA and curves through its events and shows the plan it made; Stop saves and leaves the run
resumable. The plan override passes its spacing and patch size only when checked, and only valid ones."""

import pytest

from app.models.training import JobState
from app.services.child_process import FedsegChild
from app.services.training_job import AUTOMATIC_PLAN
from segmentation.plan import Plan, read_plan, write_plan
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
    page.epochs.setValue(50)
    assert page.start.isEnabled() and not page.resume.isEnabled() and not page.stop.isEnabled()
    assert page.plan.text() == AUTOMATIC_PLAN and not page.override.isChecked()
    page.start.click()
    assert model.state is JobState.STARTING and page.stop.isEnabled() and not page.start.isEnabled()
    arguments = page.session.job.arguments
    assert "--spacing" not in arguments and "--patch-size" not in arguments
    qtbot.waitUntil(lambda: len(model.curves.epoch_loss) >= 2, timeout=120_000)  # the window stays live
    plan = read_plan(tmp_path / "run" / "plan.json")  # written by the child before it trained
    assert page.plan.text() == plan.describe() and "patch" in page.plan.text() and not plan.overridden
    assert 0 < page.bar.value() < 1000 and page.tile_epoch.value.text().endswith("/ 50")
    assert page.tile_eta.value.text() != "—"  # two steps timed
    qtbot.waitUntil(lambda: len(page.curves.loss_axes.get_lines()) == 2, timeout=5_000)  # redraws throttled
    loss_lines = page.curves.loss_axes.get_lines()
    assert [line.get_label() for line in loss_lines] == ["step", "epoch"]
    assert len(loss_lines[1].get_xdata()) >= 1
    dice_labels = [line.get_label() for line in page.curves.dice_axes.get_lines()]
    assert dice_labels == ["liver", "kidney", "spleen", "pancreas", "mean"]
    page.stop.click()
    assert model.state is JobState.STOPPING
    qtbot.waitUntil(lambda: model.state is JobState.STOPPED and not page.timer.isActive(), timeout=120_000)
    assert "resume" in model.message and page.resume.isEnabled() and page.start.isEnabled()
    assert page.plan.text() == plan.describe() and not page.override.isEnabled()  # Resume keeps the plan
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
    assert page.session.job is None and window.workbench.training.state is JobState.IDLE


def set_override(page, spacing, patch):
    page.override.setChecked(True)
    for field, value in zip(page.spacing, spacing, strict=True):
        field.setValue(value)
    for field, value in zip(page.patch, patch, strict=True):
        field.setValue(value)


@pytest.fixture
def started(monkeypatch):
    """The arguments of every child the page starts, none of which really starts."""
    arguments = []
    monkeypatch.setattr(FedsegChild, "start", lambda child: arguments.append(child.arguments))
    return arguments


def test_the_plan_override_passes_its_values_only_when_checked(qtbot, window, tiny_dataset, tmp_path,
                                                                started):
    page = window.navigate("training")
    page.set_dataset(tiny_dataset)
    page.out.set_path(tmp_path / "run")
    page.channels.setText("8,16,32")
    stale = Plan({0: "background", 1: "liver"}, 2, (1.0, 1.0, 1.0), (8, 8))
    write_plan(stale, tmp_path / "run" / "plan.json")
    set_override(page, (0.8, 0.75, 2.5), (64, 48))
    page.override.setChecked(False)
    assert page.override.isEnabled() and page.plan_override() is None
    page.start.click()
    page.timer.stop()
    assert "--spacing" not in started[-1] and "--patch-size" not in started[-1]
    assert not (tmp_path / "run" / "plan.json").exists()  # a failed start's plan is never shown as this run's
    page.session.job, started[:] = None, []
    window.workbench.training.set_state(JobState.IDLE)  # as if the first child had ended
    page.override.setChecked(True)
    page.start.click()
    page.timer.stop()
    assert len(started) == 1
    given = started[0][started[0].index("--spacing"):]
    assert given == ["--spacing", "0.8,0.75,2.5", "--patch-size", "64,48"]


@pytest.mark.parametrize(("spacing", "patch", "message"), [
    ((0.8, 0.0, 2.5), (64, 64), "Target spacing Y must be a positive number"),
    ((0.8, 0.8, 2.5), (100, 64), "multiples of 8"),
])
def test_an_invalid_plan_override_is_refused_and_starts_nothing(qtbot, window, tiny_dataset, tmp_path,
                                                                started, error_dialogs, spacing, patch,
                                                                message):
    page = window.navigate("training")
    page.set_dataset(tiny_dataset)
    page.out.set_path(tmp_path / "run")
    page.channels.setText("8,16,32,64")
    set_override(page, spacing, patch)
    page.start.click()
    dialogs = error_dialogs(page)
    assert dialogs and message in dialogs[0].text()
    assert started == [] and page.session.job is None and window.workbench.training.state is JobState.IDLE


def test_a_trained_run_folder_shows_its_plan_and_keeps_it(qtbot, window, tiny_dataset, tmp_path):
    page = window.navigate("training")
    run = tmp_path / "run"
    plan = Plan(labels={0: "background", 1: "liver"}, spatial_dims=2, target_spacing=(0.8, 0.8, 2.5),
                patch_size=(96, 64), overridden=("target_spacing",))
    write_plan(plan, run / "plan.json")
    page.set_dataset(tiny_dataset)
    page.out.set_path(run)
    assert page.plan.text() == AUTOMATIC_PLAN and page.override.isEnabled()  # no model: a start re-plans
    (run / "model.pt").write_bytes(b"")
    page.out.set_path(tmp_path / "elsewhere")
    page.out.set_path(run)
    assert page.plan.text() == f"{plan.describe()} (set by hand: target spacing)"
    assert not page.override.isEnabled() and page.resume.isEnabled()


def test_typing_never_redraws_the_curves_and_bursts_of_events_redraw_once(qtbot, window, monkeypatch):
    page = window.navigate("training")
    drawn = []
    monkeypatch.setattr(page.curves, "plot", lambda model: drawn.append(len(model.curves.epoch_loss)))
    qtbot.keyClicks(page.data.edit, "/data/some/site/dataset")  # every keystroke refreshes the page
    qtbot.wait(600)
    assert drawn == []
    model = window.workbench.training
    model.apply_all([{"kind": "started", "epochs": 40}])
    for epoch in range(1, 31):  # thirty epochs arrive in one poll's worth of time
        model.apply_all([{"kind": "epoch", "epoch": epoch, "loss": 1 / epoch,
                          "metrics": {"dice": epoch / 40}}])
    qtbot.waitUntil(lambda: bool(drawn) and drawn[-1] == 30, timeout=5_000)
    assert len(drawn) <= 2  # throttled: not one redraw per event


def test_legends_sit_beside_the_curves_never_over_them(qtbot, window):
    page = window.navigate("training")
    model = window.workbench.training
    model.apply_all([{"kind": "started", "epochs": 4}])
    for epoch in range(1, 5):
        model.apply_all([{"kind": "progress", "epoch": epoch, "epochs": 4, "step": 1, "steps": 1,
                          "loss": 0.5},
                         {"kind": "epoch", "epoch": epoch, "loss": 0.5,
                          "metrics": {"dice": 0.1, "dice/liver": 0.05, "dice/kidney": 0.9}}])
    page.curves.plot(model)
    page.curves.draw()
    renderer = page.curves.figure.canvas.get_renderer()
    for axes in (page.curves.loss_axes, page.curves.dice_axes):
        legend = axes.get_legend()
        assert legend is not None
        box, area = legend.get_window_extent(renderer), axes.get_window_extent(renderer)
        assert box.x0 >= area.x1 - 1  # wholly to the right of the plotting area


def test_each_dataset_gets_the_epochs_nearest_to_the_remembered_length_in_steps(qtbot, window, tiny_dataset,
                                                                                 tmp_path, started):
    defaults = window.workbench.settings.training
    defaults.steps = 24
    page = window.navigate("training")
    page.set_dataset(tiny_dataset)  # one training phantom of 8 slices: one batch of 16 per epoch
    assert page.epochs.value() == 24 and page.length_note.text() == "about 24 steps, 1 per epoch"
    page.batch_size.setValue(4)  # two batches per epoch now; the epochs stay as set
    assert page.epochs.value() == 24 and page.length_note.text() == "about 48 steps, 2 per epoch"
    page.epochs.setValue(5)
    page.out.set_path(tmp_path / "run")
    page.start.click()
    page.timer.stop()
    assert started and defaults.steps == 10  # the length is remembered in steps
    larger = generate_dataset(tmp_path / "site-mr", "mr-t1", 4, 0, size=32).root  # 3 x 8 slices
    page.set_dataset(larger)
    assert page.epochs.value() == 2 and page.length_note.text() == "about 12 steps, 6 per epoch"
