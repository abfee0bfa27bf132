"""The training run model follows the project's events: progress, ETA, curves, final states."""

import pytest

from app.models.training import JobState, TrainingRunModel, format_duration


def progress(epoch, step, time, loss=1.0, steps=4, epochs=3):
    return {"kind": "progress", "time": time, "job": "train", "epoch": epoch, "epochs": epochs,
            "step": step, "steps": steps, "loss": loss}


def epoch_event(epoch, loss, dice):
    metrics = {"dice": sum(dice.values()) / len(dice), **{f"dice/{k}": v for k, v in dice.items()},
               "hd95/liver": 3.0}
    return {"kind": "epoch", "time": 0, "job": "train", "epoch": epoch, "loss": loss, "metrics": metrics}


def test_progress_eta_and_curves():
    model = TrainingRunModel()
    changes = []
    model.changed.connect(lambda: changes.append(1))
    model.apply({"kind": "started", "time": 0, "job": "train", "epochs": 3, "start_epoch": 0})
    assert model.state is JobState.RUNNING and model.eta_seconds is None
    model.apply(progress(1, 1, time=100.0, loss=2.0))  # the first step is warm-up: not timed
    model.apply(progress(1, 3, time=104.0, loss=1.5))
    assert model.fraction == pytest.approx(3 / 12)
    assert model.eta_seconds == pytest.approx((12 - 3) * 2.0)
    model.apply(epoch_event(1, 1.4, {"liver": 0.5, "spleen": 0.7}))
    model.apply({"kind": "checkpoint", "time": 0, "job": "train", "epoch": 1})
    assert model.curves.step_loss == [(0.25, 2.0), (0.75, 1.5)]
    assert model.curves.epoch_loss == [(1, 1.4)]
    assert model.curves.label_dice == {"liver": [(1, 0.5)], "spleen": [(1, 0.7)]}
    assert model.dice == pytest.approx(0.6)
    model.apply({"kind": "finished", "time": 0, "job": "train", "metrics": {}})
    assert model.state is JobState.FINISHED and len(changes) == 5  # checkpoint changes nothing shown


def test_a_resumed_session_times_only_its_own_steps():
    model = TrainingRunModel()
    model.apply_all([{"kind": "started", "time": 0, "job": "train", "epochs": 2, "start_epoch": 0},
                     progress(1, 4, time=10.0, epochs=2), epoch_event(1, 1.0, {"liver": 0.4}),
                     {"kind": "stopped", "time": 0, "job": "train", "epoch": 1}])
    assert model.state is JobState.STOPPED and "epoch 1" in model.message
    model.apply({"kind": "started", "time": 0, "job": "train", "epochs": 2, "start_epoch": 1})
    model.apply(progress(2, 1, time=500.0, epochs=2))
    assert model.eta_seconds is None
    model.apply(progress(2, 2, time=503.0, epochs=2))
    assert model.eta_seconds == pytest.approx(2 * 3.0)
    assert model.curves.epoch_loss == [(1, 1.0)]


def test_errors_nan_and_unknown_events():
    model = TrainingRunModel()
    model.apply({"kind": "epoch", "time": 0, "job": "t", "epoch": 1, "loss": None, "metrics": {"dice": None}})
    assert model.curves.epoch_loss == [] and model.dice is None
    model.apply({"kind": "site-metrics", "round": 1})
    model.apply({"kind": "error", "time": 0, "job": "t", "code": "x", "message": "out of memory"})
    assert model.state is JobState.FAILED and model.message == "out of memory"
    assert not model.state.active


def test_format_duration():
    assert format_duration(None) == "—"
    assert format_duration(65.4) == "1:05"
    assert format_duration(3725) == "1:02:05"
