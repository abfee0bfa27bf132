"""The training page's request is checked before any process starts, in the page's own words; a run's
length in steps becomes epochs of each dataset, sized from its headers as training will cut it."""

import json

import pytest

from app.services.training_job import TrainingLength, TrainingRequest, dataset_slices, training_slices
from federation.demo.settings import DemoSettings
from segmentation.errors import ConfigError
from segmentation.settings import CHECKPOINT_NAME, EVENTS_NAME
from segmentation.synth import generate_dataset


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


def epoch_batches(dataset, batch_size):
    """How many batches an epoch of real training cuts from a dataset (segmentation.patches' own count)."""
    from segmentation.case_cache import CaseCache
    from segmentation.fingerprint import plan_for_cases
    from segmentation.patches import PatchDataset
    from segmentation.settings import NetworkConfig

    network = NetworkConfig(out_channels=len(dataset.labels), channels=(8, 16))
    plan, _ = plan_for_cases(dataset.training, dataset.labels, network, batch_size)
    cache = CaseCache(dataset.root.parent / "cache", plan)
    cases = [cache.load(case) for case in dataset.training]
    return len(PatchDataset(cases, plan.patch_size, batch_size, foreground_oversampling=0.33))


@pytest.mark.parametrize("modality", ["ct", "mr-t1", "mr-t2"])  # DICOM LPS, sagittal NIfTI, thick slices
def test_an_epochs_steps_are_sized_from_the_headers_as_training_cuts_them(tmp_path, modality):
    geometry = DemoSettings(volume_size=32).site_geometry(modality)
    dataset = generate_dataset(tmp_path / "site", modality, 13, 0, size=32, geometry=geometry)
    assert len(dataset.training) == 10  # more than the sample: the headers read are scaled to all cases
    length = TrainingLength.of(1, training_slices(dataset.root), batch_size=4)
    assert length.steps_per_epoch == epoch_batches(dataset, 4)


def test_the_length_in_steps_becomes_the_epochs_nearest_to_it_on_each_dataset():
    demo = TrainingLength.of(1, slices=16 * 16, batch_size=16)  # 16 training phantoms of 16 slices
    assert demo.nearest(500) == TrainingLength(31, 16) and demo.nearest(500).steps == 496
    assert demo.nearest(500).describe() == "about 496 steps, 16 per epoch"
    hospital = TrainingLength.of(1, slices=200 * 120, batch_size=16)  # 200 CT studies of 120 slices
    assert hospital.nearest(500) == TrainingLength(1, 1500)  # one epoch, never twenty
    assert TrainingLength.of(1, slices=3, batch_size=16).nearest(2) == TrainingLength(2, 1)


def test_a_dataset_that_cannot_be_sized_leaves_the_epochs_alone(tmp_path):
    assert dataset_slices(None) is None and dataset_slices(tmp_path) is None  # no dataset.json
    dataset = generate_dataset(tmp_path / "site", "ct", 3, 0, size=16)
    assert dataset_slices(dataset.root) == 2 * 8
    dataset.training[0].image.write_bytes(b"not a NIfTI file")
    assert dataset_slices(dataset.root) is None


def test_the_training_session_reports_a_failed_child_once_and_refuses_a_second_run(tmp_path):
    import time

    from app.models.training import JobState, TrainingRunModel
    from app.services.training_job import TrainingSession

    data = tmp_path / "data"
    data.mkdir()
    (data / "dataset.json").write_text("{}", encoding="utf-8")  # passes the page's check, not the child's
    model = TrainingRunModel()
    session = TrainingSession(model)
    assert session.poll() is None and session.checkpoint is None
    session.begin(TrainingRequest(data, tmp_path / "run", epochs=2))
    assert model.state is JobState.STARTING and session.active
    with pytest.raises(ConfigError, match="in progress"):
        session.begin(TrainingRequest(data, tmp_path / "other", epochs=2))
    failures = []
    deadline = time.monotonic() + 120
    while session.active:
        assert time.monotonic() < deadline
        failures.append(session.poll())
        time.sleep(0.2)
    failures += [session.poll(), session.poll()]
    reported = [failure for failure in failures if failure]
    assert len(reported) == 1 and "dataset.json" in reported[0]
    assert model.state is JobState.FAILED and model.message == reported[0]
    assert session.checkpoint == tmp_path / "run" / "model.pt"
