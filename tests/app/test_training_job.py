"""The training page's request is checked before any process starts, in the page's own words."""

import json

import pytest

from app.services.training_job import TrainingRequest
from segmentation.errors import ConfigError
from segmentation.settings import CHECKPOINT_NAME, EVENTS_NAME


def test_resuming_a_run_that_has_its_epochs_asks_for_more_in_the_pages_words(tmp_path):
    data, run = tmp_path / "data", tmp_path / "run"
    data.mkdir()
    run.mkdir()
    (data / "dataset.json").write_text("{}", encoding="utf-8")
    (run / CHECKPOINT_NAME).write_bytes(b"")
    events = [{"kind": "started", "epochs": 5}, *({"kind": "epoch", "epoch": n} for n in range(1, 6))]
    (run / EVENTS_NAME).write_text("".join(json.dumps(event) + "\n" for event in events), encoding="utf-8")
    with pytest.raises(ConfigError) as refused:
        TrainingRequest(data, run, epochs=5, resume=True).check()
    assert str(refused.value) == "this run has trained 5 epochs already; set Epochs above 5 to train on"
    assert "--" not in str(refused.value)
    TrainingRequest(data, run, epochs=6, resume=True).check()  # more epochs: fine
