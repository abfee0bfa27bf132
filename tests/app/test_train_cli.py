"""`fedseg train` and `fedseg evaluate` end to end on tiny demo data, in process."""

import csv
import json
import shutil
import signal

import pytest
import torch

import app.progress
from app.cli import main
from app.commands.train import AUGMENTATION_CHOICES
from segmentation.checkpoint import load_checkpoint
from segmentation.events import read_events
from segmentation.plan import Plan, read_plan, write_plan
from segmentation.synth import generate_dataset
from segmentation.transforms import build_batch_augmentation

TINY = ["--channels", "8,16", "--batch-size", "8"]


@pytest.fixture(autouse=True)
def one_torch_thread():
    """These tensors are tiny: one thread avoids oversubscribing the shared CPU cores (5x faster)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    return generate_dataset(tmp_path_factory.mktemp("demo") / "ct", "ct", cases=3, seed=0, size=32, dim=3)


@pytest.fixture(scope="module")
def trained(demo, tmp_path_factory):
    """A run folder after one epoch of `fedseg train`."""
    root = tmp_path_factory.mktemp("trained")
    code = main(["train", "--data", str(demo.root), "--aug", "gin", "--epochs", "1",
                 "--out", str(root / "run"), "--cache", str(root / "cache"), *TINY])
    assert code == 0
    return root


def _train(demo, run, *extra: str) -> int:
    return main(["train", "--data", str(demo.root), "--out", str(run), "--cache", str(run.parent / "cache"),
                 *extra])


def test_train_writes_checkpoint_events_and_history(trained, demo, capsys):
    run = trained / "run"
    checkpoint = load_checkpoint(run / "model.pt")
    assert checkpoint.epoch == 1 and checkpoint.augmentation == "gin" and checkpoint.labels == demo.labels
    assert checkpoint.network.channels == (8, 16)
    # The automatic plan: 32-pixel phantoms over 400 mm are 12.5 mm pixels; a patch covers the body's box
    # of a slice (at most the whole 32 x 32 slice), in steps of 2 for the U-Net's two levels.
    plan = checkpoint.plan
    assert plan.target_spacing[:2] == (12.5, 12.5)
    assert all(side <= 32 and side % 2 == 0 for side in plan.patch_size)
    assert read_plan(run / "plan.json") == checkpoint.plan
    assert checkpoint.optimizer_state is not None and checkpoint.training["batch_size"] == 8
    kinds = [event["kind"] for event in read_events(run / "events.jsonl")]
    assert kinds[0] == "started" and kinds[-1] == "finished"
    assert {"progress", "epoch", "checkpoint"} <= set(kinds)
    with open(run / "history.csv", newline="") as stream:
        rows = list(csv.DictReader(stream))
    assert len(rows) == 1 and rows[0]["epoch"] == "1" and float(rows[0]["loss"]) > 0
    assert 0.0 <= float(rows[0]["dice"]) <= 1.0  # validated on the demo's test split


def test_resume_continues_to_the_requested_total(trained, demo, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(trained / "run", run)
    assert _train(demo, run, "--epochs", "2", "--resume", "--lr", "5e-4") == 0
    checkpoint = load_checkpoint(run / "model.pt")
    assert checkpoint.epoch == 2 and [row["epoch"] for row in checkpoint.history] == [1, 2]
    assert checkpoint.training["learning_rate"] == 5e-4 and checkpoint.network.channels == (8, 16)
    events = list(read_events(run / "events.jsonl"))
    resumed = events[max(i for i, e in enumerate(events) if e["kind"] == "started"):]
    assert {e["epoch"] for e in resumed if e["kind"] == "progress"} == {2}
    assert "saved" in capsys.readouterr().out
    assert _train(demo, run, "--epochs", "2", "--resume") == 0
    assert "already has 2 epochs" in capsys.readouterr().out


@pytest.mark.parametrize("interrupts", [1, 2])
def test_ctrl_c_saves_a_checkpoint_emits_stopped_and_exits_130(demo, tmp_path, monkeypatch, capsys,
                                                               interrupts):
    class InterruptingBar(app.progress.EventProgressBar):
        """Presses Ctrl-C (`interrupts` times) right after the first of several steps of epoch 1."""

        def __call__(self, event):
            super().__call__(event)
            if event["kind"] == "progress" and event["step"] == 1:
                assert event["steps"] > 1
                for _ in range(interrupts):
                    signal.raise_signal(signal.SIGINT)

    monkeypatch.setattr(app.progress, "EventProgressBar", InterruptingBar)
    handler_before = signal.getsignal(signal.SIGINT)  # a background job (CI) may inherit SIG_IGN
    run = tmp_path / "run"
    assert _train(demo, run, "--epochs", "3", "--aug", "none", *TINY) == 130
    assert f"saved {run / 'model.pt'}" in capsys.readouterr().err
    assert load_checkpoint(run / "model.pt").epoch == 0
    events = list(read_events(run / "events.jsonl"))
    assert events[-1]["kind"] == "stopped" and events[-1]["epoch"] == 0
    assert sum(e["kind"] == "progress" for e in events) == 1
    assert signal.getsignal(signal.SIGINT) is handler_before  # handler restored


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--resume"], "does not exist"),
        (["--channels", "8,x"], "--channels"),
        (["--patch-size", "31,31"], "multiples of 2"),
        (["--patch-size", "32"], "--patch-size needs 2 positive values"),
        (["--spacing", "1,0,1"], "--spacing needs 3 positive values"),
        (["--plan", "missing-plan.json"], "cannot read the plan"),
        (["--batch-size", "0"], "batch_size"),
    ],
)
def test_bad_options_exit_2_with_one_line(demo, tmp_path, capsys, extra, message):
    args = ["--epochs", "1", *TINY, *extra]
    assert _train(demo, tmp_path / "run", *args) == 2
    err = capsys.readouterr().err
    assert err.startswith("fedseg: error:") and message in err and err.count("\n") == 1


def test_bad_data_or_conflicting_runs_exit_2(trained, demo, tmp_path, capsys):
    assert main(["train", "--data", str(tmp_path), "--epochs", "1", "--out", str(tmp_path / "r")]) == 2
    assert "dataset.json" in capsys.readouterr().err
    run = tmp_path / "run"
    shutil.copytree(trained / "run", run)
    assert _train(demo, run, "--epochs", "2", *TINY) == 2
    assert "--resume" in capsys.readouterr().err
    assert _train(demo, run, "--epochs", "2", "--resume", "--aug", "fourier") == 2
    assert "trained with --aug gin" in capsys.readouterr().err


def test_a_given_plan_or_override_is_followed_and_kept_on_resume(demo, tmp_path, capsys):
    plan = Plan(labels=demo.labels, spatial_dims=2, target_spacing=(25.0, 25.0, 25.0), patch_size=(16, 16))
    write_plan(plan, tmp_path / "plan.json")
    given = tmp_path / "given"
    assert _train(demo, given, "--epochs", "1", "--plan", str(tmp_path / "plan.json"), *TINY) == 0
    assert load_checkpoint(tmp_path / "given" / "model.pt").plan == plan
    assert _train(demo, tmp_path / "override", "--epochs", "1", "--patch-size", "16,16", *TINY) == 0
    overridden = read_plan(tmp_path / "override" / "plan.json")
    assert overridden.patch_size == (16, 16) and overridden.overridden == ("patch_size",)
    capsys.readouterr()
    assert _train(demo, tmp_path / "given", "--epochs", "2", "--resume", "--patch-size", "8,8") == 2
    assert "keeps the plan it was trained with" in capsys.readouterr().err
    other = Plan(labels={0: "background", 1: "liver"}, spatial_dims=2, target_spacing=(1, 1, 1),
                 patch_size=(8, 8))
    write_plan(other, tmp_path / "other.json")
    assert _train(demo, tmp_path / "other", "--epochs", "1", "--plan", str(tmp_path / "other.json")) == 2
    assert "plans labels" in capsys.readouterr().err


def test_evaluate_prints_tables_or_json(trained, demo, capsys):
    model = str(trained / "run" / "model.pt")
    assert main(["evaluate", "--model", model, "--data", str(demo.root)]) == 0
    out = capsys.readouterr().out
    names = [name for value, name in demo.labels.items() if value != 0]
    assert "Dice" in out and "HD95 (mm)" in out and all(name in out for name in names)
    assert all(case.case_id in out for case in demo.test)

    assert main(["evaluate", "--model", model, "--data", str(demo.root), "--split", "all", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert len(report["cases"]) == len(demo.training) + len(demo.test)
    assert set(report["mean"]["dice"]) == set(names)
    assert 0.0 <= report["dice"] <= 1.0 and report["hd95"] >= 0.0


def test_evaluate_errors_exit_2(trained, demo, tmp_path, capsys):
    model = trained / "run" / "model.pt"
    broken = tmp_path / "broken.pt"
    broken.write_bytes(b"not a checkpoint")
    for args in (["--model", str(tmp_path / "none.pt"), "--data", str(demo.root)],
                 ["--model", str(broken), "--data", str(demo.root)],
                 ["--model", str(model), "--data", str(tmp_path)]):
        assert main(["evaluate", *args]) == 2
        assert capsys.readouterr().err.startswith("fedseg: error:")


@pytest.mark.parametrize("name", AUGMENTATION_CHOICES)
def test_every_augmentation_choice_has_an_implementation(name):
    batch = torch.rand(2, 1, 16, 16)
    augment = build_batch_augmentation(name, seed=0)
    if name in ("none", "dsn"):  # no batch op: dsn acts through the plan's normalization
        assert augment is None
    else:
        assert augment(batch).shape == batch.shape
