"""The workbench's plain-Python services: settings, event tail, training jobs, studies, inference, demo."""

import json
import subprocess
import sys

import numpy as np
import pytest

import app.services.demo as demo
from app.services.child_process import FedsegChild
from app.services.demo import DemoFederationJob
from app.services.federation_site import SiteForm, SiteJob, check_reachable, write_site_config
from app.services.inference import describe_model, export_dicom_seg, export_mask, segment
from app.services.settings import RECENT_LIMIT, Settings, SettingsStore, TrainingDefaults
from app.services.studies import labels_beside, list_series_choices, load_label_map, load_study
from app.services.training_job import (
    AUTOMATIC_PLAN,
    CHECKPOINT_NAME,
    EVENTS_NAME,
    PlanOverride,
    RunPlan,
    TrainingRequest,
    previous_events,
)
from segmentation.errors import ConfigError, DatasetError, StudyReadError
from segmentation.events import EventTail
from segmentation.io import read_volume, write_volume
from segmentation.plan import Plan, write_plan
from segmentation.settings import PLAN_NAME
from segmentation.synth import generate_dataset
from segmentation.volume import Volume


def test_settings_round_trip_recent_files_and_damaged_files(tmp_path):
    store = SettingsStore(tmp_path / "config" / "settings.toml")
    settings = store.load()
    assert settings == Settings()
    for index in range(RECENT_LIMIT + 2):
        settings.add_recent_study(f"/data/study{index}.nii.gz")
    settings.add_recent_study("/data/study5.nii.gz")
    settings.training.learning_rate = 0.0005
    settings.site.name = "hospital-a"
    settings.site.peer_keys, settings.site.min_mask_sites = "/keys/federation", 2
    store.save(settings)
    loaded = SettingsStore(store.path).load()
    assert loaded == settings
    assert loaded.recent_studies[0] == "/data/study5.nii.gz" and len(loaded.recent_studies) == RECENT_LIMIT
    assert loaded.recent_studies.count("/data/study5.nii.gz") == 1
    store.path.write_text("[training]\nsteps = 'many'\n", encoding="utf-8")
    damaged = SettingsStore(store.path)
    assert damaged.load() == Settings() and "could not be read (ValueError)" in damaged.problem


def test_a_damaged_settings_file_is_kept_aside_and_never_overwritten(tmp_path):
    path = tmp_path / "config" / "settings.toml"
    path.parent.mkdir()
    garbage = b"workspace = '/data\n[[not toml \xff\x00"
    path.write_bytes(garbage)
    store = SettingsStore(path)
    assert store.load() == Settings()
    (kept,) = [item for item in path.parent.iterdir() if item != path]
    assert kept.name.startswith("settings.toml.damaged-") and kept.read_bytes() == garbage
    assert not path.exists()
    assert store.problem == (f"{path} could not be read (UnicodeDecodeError); it was kept as {kept}; "
                             "using default settings")
    settings = store.load()
    settings.add_recent_dataset("/data/site")
    store.save(settings)
    assert kept.read_bytes() == garbage and SettingsStore(path).load().recent_datasets == ["/data/site"]
    path.write_text("not = [toml", encoding="utf-8")  # damaged again within the same second
    again = SettingsStore(path)
    assert again.load() == Settings() and "(TOMLDecodeError)" in again.problem
    assert kept.read_bytes() == garbage
    kept_again = {item for item in path.parent.iterdir()} - {kept}
    assert [item.read_text() for item in kept_again] == ["not = [toml"]


def test_settings_of_an_earlier_version_with_an_image_size_still_load(tmp_path):
    path = tmp_path / "settings.toml"
    path.write_text("[training]\nepochs = 7\nimage_size = 128\n", encoding="utf-8")
    store = SettingsStore(path)
    settings = store.load()
    assert settings.training == TrainingDefaults() and not store.problem  # a fixed epoch count is dropped
    assert not hasattr(settings.training, "image_size")


def test_event_tail_waits_for_whole_lines_and_restarts_on_a_new_file(tmp_path):
    path = tmp_path / "events.jsonl"
    tail = EventTail(path)
    assert tail.read() == []
    path.write_text(json.dumps({"kind": "started"}) + "\n" + '{"kind": "progr', encoding="utf-8")
    assert [event["kind"] for event in tail.read()] == ["started"]
    with open(path, "a", encoding="utf-8") as stream:
        stream.write('ess"}\nnot json\n')
    assert [event["kind"] for event in tail.read()] == ["progress"]
    path.write_text(json.dumps({"kind": "finished"}) + "\n", encoding="utf-8")  # a new, shorter file
    assert [event["kind"] for event in tail.read()] == ["finished"]
    assert EventTail(path).read() == []  # a new tail starts at the end


def test_training_request_arguments_and_checks(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    request = TrainingRequest(data, tmp_path / "run", epochs=3, augmentation="fourier", learning_rate=2e-4,
                              batch_size=4, channels=(8, 16))
    with pytest.raises(DatasetError, match="dataset.json"):
        request.check()
    (data / "dataset.json").write_text("{}", encoding="utf-8")
    request.check()
    assert request.arguments() == [
        "train", "--data", str(data), "--out", str(tmp_path / "run"), "--epochs", "3", "--lr", "0.0002",
        "--batch-size", "4", "--aug", "fourier", "--channels", "8,16",
    ]  # no plan options: the child plans from the data
    resumed = TrainingRequest(data, tmp_path / "run", epochs=5, resume=True)
    assert resumed.arguments()[-1] == "--resume" and "--aug" not in resumed.arguments()
    with pytest.raises(ConfigError, match="no model to resume"):
        resumed.check()
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / CHECKPOINT_NAME).write_bytes(b"")
    with pytest.raises(ConfigError, match="already holds a run"):
        request.check()
    (tmp_path / "run" / EVENTS_NAME).write_text('{"kind": "started"}\n', encoding="utf-8")
    assert previous_events(tmp_path / "run") == [{"kind": "started"}]


def test_a_plan_override_passes_exactly_its_spacing_and_patch_size(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "dataset.json").write_text("{}", encoding="utf-8")
    override = PlanOverride((0.8, 0.75, 2.5), (64, 48))
    request = TrainingRequest(data, tmp_path / "run", epochs=3, channels=(8, 16, 32), plan_override=override)
    request.check()
    arguments = request.arguments()
    assert arguments[arguments.index("--channels"):] == [
        "--channels", "8,16,32", "--spacing", "0.8,0.75,2.5", "--patch-size", "64,48",
    ]
    assert arguments.count("--spacing") == 1 and arguments.count("--patch-size") == 1


@pytest.mark.parametrize(("override", "channels", "message"), [
    (PlanOverride((0.8, 0.0, 2.5), (64, 64)), (8, 16), "target spacing Y must be a positive"),
    (PlanOverride((0.8, 0.8, -1.0), (64, 64)), (8, 16), "target spacing Z must be a positive"),
    (PlanOverride((0.8, 0.8, 2.5), (0, 64)), (8, 16), "patch sides must be positive"),
    (PlanOverride((0.8, 0.8, 2.5), (100, 64)), (8, 16, 32, 64), r"multiples of 8 .* try 96 × 64"),
    (PlanOverride((0.8, 0.8, 2.5), (64, 64)), (8,), "U-Net widths"),
])
def test_invalid_plan_overrides_are_refused_with_a_sentence(tmp_path, override, channels, message):
    data = tmp_path / "data"
    data.mkdir()
    (data / "dataset.json").write_text("{}", encoding="utf-8")
    request = TrainingRequest(data, tmp_path / "run", epochs=3, channels=channels, plan_override=override)
    with pytest.raises(ConfigError, match=message):
        request.check()


def test_a_resumed_run_keeps_its_plan(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "dataset.json").write_text("{}", encoding="utf-8")
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / CHECKPOINT_NAME).write_bytes(b"")
    override = PlanOverride((1.0, 1.0, 1.0), (64, 64))
    request = TrainingRequest(data, tmp_path / "run", epochs=3, resume=True, plan_override=override)
    assert "--spacing" not in request.arguments() and "--patch-size" not in request.arguments()
    with pytest.raises(ConfigError, match="keeps the plan"):
        request.check()


def test_the_plan_line_is_automatic_until_the_run_has_a_plan(tmp_path):
    run = tmp_path / "run"
    plans = RunPlan()
    assert plans.describe(None) == AUTOMATIC_PLAN and plans.describe(run, started=True) == AUTOMATIC_PLAN
    plan = Plan(labels={0: "background", 1: "liver"}, spatial_dims=2, target_spacing=(0.8, 0.8, 2.5),
                patch_size=(96, 64))
    write_plan(plan, run / PLAN_NAME)
    assert plans.describe(run) == AUTOMATIC_PLAN  # left from a start that never trained
    assert plans.describe(run, started=True) == plan.describe() == "2D, 0.8 x 0.8 mm in-plane, slices as " \
        "stored, patch 96 x 64"
    (run / CHECKPOINT_NAME).write_bytes(b"")
    assert plans.describe(run) == plan.describe()  # a trained run's plan
    write_plan(Plan(plan.labels, 2, (1.0, 1.0, 2.5), (64, 64), overridden=("patch_size",)), run / PLAN_NAME)
    assert plans.describe(run) == "2D, 1 x 1 mm in-plane, slices as stored, patch 64 x 64 (set by hand: " \
        "patch size)"
    (run / PLAN_NAME).write_text("{not json", encoding="utf-8")
    assert plans.describe(run).startswith("unreadable: ")


def test_a_failing_child_reports_its_one_line_error(tmp_path):
    child = FedsegChild(["inspect", str(tmp_path / "missing.nii.gz")], tmp_path / "child.log",
                        tmp_path / "events.jsonl")
    assert child.command[:3] == [sys.executable, "-m", "app.cli"]
    child.start()
    child.wait(60)
    assert child.exit_code == 2 and not child.running
    assert child.failure_message() == f"{tmp_path / 'missing.nii.gz'} does not exist"
    assert not child.stop_requested  # a failure the user did not ask for: the page shows a dialog


class ProgressChild(FedsegChild):
    """A child that draws a progress bar the way tqdm does (carriage returns), between two lines."""

    @property
    def command(self) -> list[str]:
        bars = "".join(f"\\rbar {n}%" for n in (1, 50, 100))
        script = f"import sys; sys.stdout.write('joined\\n{bars}\\ndone\\n')"
        return [sys.executable, "-c", script]


def test_the_log_shows_a_progress_bar_as_one_line_in_its_latest_state(tmp_path):
    earlier = tmp_path / "child.log"
    earlier.write_text("an earlier session's line\n")
    child = ProgressChild(["progress"], earlier, tmp_path / "events.jsonl")
    child.start()
    child.wait(60)
    assert child.log_tail(10) == "joined\nbar 100%\ndone"  # this child's output only, as a terminal shows it
    assert child.log_tail(1) == "done"


def test_a_child_stopped_while_starting_remembers_it_was_asked_to(tmp_path):
    child = FedsegChild(["experiment", "cross-modality", "--out", str(tmp_path / "run")],
                        tmp_path / "child.log", tmp_path / "events.jsonl")
    child.start()
    child.request_stop()  # SIGINT before the command has even imported its modules
    child.wait(60)
    assert child.stop_requested and child.exit_code not in (None, 0)


def test_studies_load_with_metadata_and_msd_labels(tmp_path):
    image = Volume(np.arange(24, dtype=np.int16).reshape(2, 3, 4), spacing=(0.5, 0.5, 2.0), modality="ct")
    image_path = write_volume(image, tmp_path / "imagesTr" / "case_000.nii.gz")
    labels = image.with_array(np.ones((2, 3, 4), np.uint8))
    label_path = write_volume(labels, tmp_path / "labelsTr" / "case_000.nii.gz")
    study = load_study(image_path)
    assert study.name == "case_000.nii.gz" and not study.is_dicom
    rows = dict(study.details)
    assert rows["Format"] == "NIfTI" and rows["Size (x × y × z)"] == "4 × 3 × 2"
    assert rows["Value range"] == "0 … 23"
    assert list_series_choices(image_path) == []
    assert labels_beside(image_path) == label_path
    assert labels_beside(label_path) is None
    assert load_label_map(label_path).labels == {1: "label 1"}
    broken = tmp_path / "broken.nii.gz"
    broken.write_bytes(b"\x1f\x8b not really gzip")
    with pytest.raises(StudyReadError):
        load_study(broken)


def test_segment_measures_and_exports_in_the_study_geometry(tmp_path, tiny_checkpoint):
    checkpoint = tiny_checkpoint
    summary = describe_model(checkpoint)
    assert summary.epoch == 4 and "epoch 4" in summary.describe() and "2 labels" in summary.describe()
    assert summary.describe().endswith("plan 2D, 2 x 2 mm in-plane, slices as stored, patch 32 x 32")
    array = np.random.default_rng(0).normal(size=(3, 20, 24)).astype(np.float32)
    image = Volume(array, spacing=(2.0, 2.0, 5.0), origin=(1.0, 2.0, 3.0), modality="ct")
    study = load_study(write_volume(image, tmp_path / "ct.nii.gz"))
    steps = []
    result = segment(checkpoint, study, lambda done, total: steps.append((done, total)))
    assert result.mask.shape == image.shape and result.mask.spacing == pytest.approx(image.spacing)
    assert set(result.volumes_ml) == {"liver", "spleen"} and steps[-1] == (3, 3)
    voxel_ml = 2.0 * 2.0 * 5.0 / 1000
    assert sum(result.volumes_ml.values()) == pytest.approx(np.count_nonzero(result.mask.array) * voxel_ml)
    written = export_mask(result.mask, tmp_path / "out" / "mask.nii.gz")
    np.testing.assert_array_equal(read_volume(written).array, result.mask.array)
    with pytest.raises(ConfigError, match="DICOM-SEG"):
        export_dicom_seg(result.mask, study, tmp_path / "seg.dcm")


def test_demo_workspace_is_made_once(tmp_path, monkeypatch):
    monkeypatch.setattr(demo, "DEMO_CASES", 2)
    monkeypatch.setattr(demo, "DEMO_SIZE", 16)
    messages = []
    workspace = demo.prepare_demo_workspace(tmp_path, messages.append)
    assert set(workspace.sites) == {"ct", "mr-t1", "mr-t2"} and len(messages) == 3
    assert workspace.chest_ct.is_file() and workspace.chest_labels.is_file()
    image, label = workspace.first_case("mr-t2")
    assert image.is_file() and label.is_file()
    stamp = (workspace.sites["ct"] / "dataset.json").stat().st_mtime_ns
    demo.prepare_demo_workspace(tmp_path, messages.append)
    assert len(messages) == 3 and (workspace.sites["ct"] / "dataset.json").stat().st_mtime_ns == stamp


def test_site_form_writes_a_site_toml_the_federation_accepts(tmp_path):
    data = generate_dataset(tmp_path / "data", "ct", 2, 0, size=16).root
    form = SiteForm(name="CT Hospital", modality="ct", data_dir=str(data), server_address="127.0.0.1:9092",
                    unencrypted=True)
    config = write_site_config(form, tmp_path / "site")
    assert (config.name, config.modality, config.server_address) == ("CT Hospital", "ct", "127.0.0.1:9092")
    assert not config.tls_enabled and config.event_file == tmp_path / "site" / "events.jsonl"
    with pytest.raises(ConfigError, match="name"):
        write_site_config(SiteForm("a/b", "ct", str(data), "127.0.0.1:9092", unencrypted=True),
                          tmp_path / "bad")
    job = SiteJob(config)
    assert job.arguments == ["site", "--config", str(tmp_path / "site" / "site.toml")]


def test_reachability_is_a_sentence_either_way():
    import socket

    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        address = f"127.0.0.1:{server.getsockname()[1]}"
        assert check_reachable(address) == f"{address} answers"
    with pytest.raises(ConfigError, match="does not answer"):
        check_reachable(address, timeout=1.0)
    with pytest.raises(ConfigError, match="HOST:PORT"):
        check_reachable("no-port")


def test_the_demo_federation_finds_its_server_events(tmp_path):
    job = DemoFederationJob(tmp_path / "demo", rounds=2)
    assert job.arguments == ["demo", "--out", str(tmp_path / "demo"), "--rounds", "2"]
    # The workbench's Start demo runs the demo's own rounds (1-epoch rounds: a handful would train little).
    joined = DemoFederationJob(tmp_path / "demo", join_site="ct")
    assert joined.arguments == ["demo", "--out", str(tmp_path / "demo"), "--join-site", "ct"]
    assert job.server_events() is None
    site = tmp_path / "demo" / "federation" / "sites" / "ct" / "events.jsonl"
    server = tmp_path / "demo" / "federation" / "run" / "events.jsonl"
    for path, job_name in ((site, "site"), (server, "server")):
        path.parent.mkdir(parents=True)
        path.write_text(json.dumps({"kind": "started", "job": job_name}) + "\n", encoding="utf-8")
    assert job.server_events() == server


def test_the_workbenchs_settings_and_site_form_load_no_cryptography():
    """Their masking settings are plain (federation.he.masking_settings): the keys are read at Join."""
    code = ("import sys\nimport app.services.settings, app.services.federation_site\n"
            "assert not [m for m in sys.modules if m.startswith('cryptography')], 'cryptography imported'")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
