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


def timed_run(epochs=4, steps=6, startup=5.0, step_seconds=0.5, end_seconds=3.0):
    """A run's events on a clock of known costs: start-up, steps, and each epoch's end (validation and
    checkpoint); the finished event's time is when the run really ended."""
    events = [{"kind": "started", "time": 0.0, "job": "train", "epochs": epochs, "start_epoch": 0}]
    now = startup
    for epoch in range(1, epochs + 1):
        for step in range(1, steps + 1):
            now += step_seconds
            events.append(progress(epoch, step, time=now, steps=steps, epochs=epochs))
        now += end_seconds
        events.append(epoch_event(epoch, 1.0, {"liver": 0.5}) | {"time": now})
    events.append({"kind": "finished", "time": now, "job": "train", "metrics": {}})
    return events


def test_the_eta_counts_each_epochs_validation_once_an_epoch_has_ended():
    events = timed_run(epochs=20, steps=5)
    end = events[-1]["time"]
    model = TrainingRunModel()
    first, later = [], {}
    for event in events[:-1]:
        model.apply(event)
        if event["kind"] == "progress" and model.eta_seconds is not None:
            seen = (model.eta_seconds, end - event["time"], model.eta_text)
            if model.pace.first_estimate:
                first.append(seen)
            else:
                later[round(model.fraction, 2)] = seen
    # Within the first epoch only steps were timed: a first estimate, short by the epoch ends to come.
    assert len(first) == 4 and all(eta < real and text.startswith("~") for eta, real, text in first)
    # From the second epoch on it is the real time left: at 10%, 25% and 50% of the run, and all along.
    assert {0.1, 0.25, 0.5} <= set(later)
    for eta, real, text in later.values():
        assert eta == pytest.approx(real) and not text.startswith("~")


def test_one_step_epochs_are_timed_across_their_ends():
    events = timed_run(epochs=5, steps=1, step_seconds=1.0, end_seconds=2.0)
    end = events[-1]["time"]
    model = TrainingRunModel()
    model.apply_all(events[:4])  # started, epoch 1's step and end, epoch 2's step
    assert model.eta_seconds is not None and not model.pace.first_estimate
    assert model.eta_seconds == pytest.approx(end - events[3]["time"], abs=1.0)  # within one step
