"""The server's run loop with real ClientApps called in-process through a grid stand-in.

What must hold: before round 1 the server plans from every site's fingerprint (the plan equals the one
made from the union of the sites' cases, computed here from their data), writes plan.json and sends the
plan every round; every round writes metrics.jsonl/metrics.csv with every site, then model.pt with the
round and the plan; a failing site is recorded and the run goes on; --resume continues after the
checkpointed round with the checkpoint's plan (it never plans again) and keeps the history up to it;
the app project passes Flower's own validation.
"""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from flwr.app import Context, Message, RecordDict
from flwr.cli.config_utils import load_and_validate
from flwr.supercore.task_identity import TaskIdentity
from site_data import LABELS, PLAN, server_toml, write_disk_site

from federation import client_app, server_app
from federation.config import load_server_config
from federation.launch import write_app_project
from federation.round_costs import round_summaries
from federation.server_run import EVENTS_NAME, METRICS_NAME, model_of, read_metrics, run_server
from federation.task import SiteSettings, model_from_json
from segmentation.case_cache import CACHE_DIR_ENVIRONMENT
from segmentation.checkpoint import load_checkpoint
from segmentation.datalist import load_dataset
from segmentation.errors import ConfigError
from segmentation.events import read_events
from segmentation.fingerprint import fingerprint_cases
from segmentation.plan import make_plan, read_plan

pytestmark = pytest.mark.usefixtures("case_cache")  # conftest: each test its own case cache


class LocalGrid:
    """Delivers each message to an in-process ClientApp with that node's Context, as a SuperNode would;
    records what it delivered (round, node, message type; 0 for the query before round 1) and the model
    description every train and evaluate message carried."""

    def __init__(self, sites: dict[int, Context]) -> None:
        self.sites = sites
        self.delivered: list[tuple[int, int, str]] = []
        self.models: list[str] = []

    def get_node_ids(self) -> list[int]:
        return list(self.sites)

    def send_and_receive(self, messages: list[Message], timeout: float) -> list[Message]:
        replies = []
        for message in messages:
            config = message.content.config_records["config"]
            self.delivered.append((config.get("server-round", 0), message.metadata.dst_node_id,
                                   message.metadata.message_type))
            if "model" in config:
                self.models.append(config["model"])
            replies.append(self.answer(message))
        return replies

    def answer(self, message: Message) -> Message:
        return client_app.app(message, self.sites[message.metadata.dst_node_id])


def site_context(node_id: int, name: str, data_dir: Path, folder: Path) -> Context:
    settings = SiteSettings(name, "ct", data_dir, folder / f"{name}.jsonl")
    return Context(run_id=1, node_id=node_id, node_config=settings.to_node_config(), state=RecordDict(),
                   run_config={})


@pytest.fixture(scope="module")
def site_dirs(tmp_path_factory):
    """Two sites of different geometry: 16 x 16 slices at 1 x 1 x 2 mm, 24 x 24 at 0.5 x 0.5 x 3 mm; so
    neither site's own plan is the federation's."""
    root = tmp_path_factory.mktemp("sites")
    return [write_disk_site(root / "a", seed=0),
            write_disk_site(root / "b", seed=1, size=24, depth=4, spacing=(0.5, 0.5, 3.0))]


def union_plan(*folders: Path):
    """The plan of every site's training cases pooled, made here without the federation's code."""
    cases = [case for folder in folders for case in load_dataset(folder).training]
    return make_plan(fingerprint_cases(cases, LABELS), 2, (8, 16), 4)


def write_config(folder: Path, rounds: int) -> Path:
    path = folder / "server.toml"
    path.write_text(server_toml("run", rounds=rounds))
    return path


def two_sites(site_dirs, folder: Path) -> LocalGrid:
    return LocalGrid({11: site_context(11, "Site A", site_dirs[0], folder),
                      12: site_context(12, "Site B", site_dirs[1], folder)})


@pytest.fixture(scope="module")
def finished_run(site_dirs, tmp_path_factory):
    """A folder with server.toml, the run folder of a finished two-round run and the sites' event files."""
    folder = tmp_path_factory.mktemp("finished")
    with pytest.MonkeyPatch.context() as patch:
        for attribute, value in (("_run_id", 1), ("_node_id", 0), ("_task_id", 1)):
            patch.setattr(TaskIdentity, attribute, value)
        patch.setenv(CACHE_DIR_ENVIRONMENT, str(folder / "cache"))
        config = load_server_config(write_config(folder, rounds=2))
        grid = two_sites(site_dirs, folder)
        run_server(grid, config, resume=False)
    (folder / "delivered.json").write_text(json.dumps({"delivered": grid.delivered, "models": grid.models}))
    return folder


@pytest.fixture
def two_site_run(server_identity, finished_run, site_dirs, tmp_path):
    """A private copy of the finished run: a fresh grid, the config path and the run folder."""
    folder = shutil.copytree(finished_run, tmp_path / "copy")
    return two_sites(site_dirs, folder), folder / "server.toml", folder / "run"


def test_every_round_records_both_sites_and_checkpoints_the_global_model(two_site_run):
    _, _, run_dir = two_site_run
    rows = [(r.round, r.phase, r.site, r.status) for r in read_metrics(run_dir / METRICS_NAME)]
    assert sorted(rows) == sorted([(n, "train", s, "accepted") for n in (1, 2) for s in ("Site A", "Site B")]
                                  + [(2, "evaluate", s, "accepted") for s in ("Site A", "Site B")])
    assert (run_dir / "metrics.csv").read_text().splitlines()[0].startswith("round,phase,site,node_id,status")
    checkpoint = load_checkpoint(run_dir / "model.pt")
    assert (checkpoint.round, checkpoint.labels, checkpoint.network.channels) == (2, LABELS, (8, 16))
    kinds = [(e["kind"], e.get("round")) for e in read_events(run_dir / EVENTS_NAME)]
    assert ("checkpoint", 1) in kinds and ("checkpoint", 2) in kinds and kinds[-1][0] == "finished"
    assert sum(kind == "site-metrics" for kind, _ in kinds) == 6


def test_every_round_closes_with_what_it_cost(finished_run):
    run_dir = finished_run / "run"
    summaries = round_summaries(read_events(run_dir / EVENTS_NAME))
    assert [summary.round for summary in summaries] == [1, 2]
    reported = {(r.round, r.site): r.metrics["site-seconds"]
                for r in read_metrics(run_dir / METRICS_NAME) if r.phase == "train"}
    model = load_checkpoint(run_dir / "model.pt").state_dict
    raw = sum(tensor.numpy().nbytes for tensor in model.values())  # every message and reply holds the model
    for summary in summaries:
        assert sorted((cost.site, cost.status) for cost in summary.sites) == [("Site A", "accepted"),
                                                                             ("Site B", "accepted")]
        for cost in summary.sites:
            assert cost.work_s == reported[(summary.round, cost.site)]
            # Same names, shapes and dtypes both ways: the same packed size, the model's bytes and a layout.
            assert cost.array_bytes_received == cost.array_bytes_sent > raw
        assert summary.work_s == max(cost.work_s for cost in summary.sites)
        assert summary.overhead_s == pytest.approx(summary.wall_s - summary.work_s)


def test_the_plan_is_made_from_every_sites_fingerprint_and_sent_every_round(finished_run, site_dirs):
    expected = union_plan(*site_dirs)
    assert expected != union_plan(site_dirs[0]) and expected != union_plan(site_dirs[1])
    run_dir = finished_run / "run"
    assert read_plan(run_dir / "plan.json") == expected
    assert load_checkpoint(run_dir / "model.pt").plan == expected
    grid = json.loads((finished_run / "delivered.json").read_text())
    assert grid["delivered"][:2] == [[0, 11, "query"], [0, 12, "query"]]
    assert [model_from_json(model).plan for model in grid["models"]] == [expected] * 6
    plans = [event for event in read_events(run_dir / EVENTS_NAME) if event["kind"] == "plan"]
    assert len(plans) == 1 and plans[0]["source"] == "fingerprints"
    assert (plans[0]["plan"], plans[0]["description"]) == (expected.to_dict(), expected.describe())
    assert [(s["site"], s["status"], s["cases"]) for s in plans[0]["sites"]] == [
        ("Site A", "accepted", 2), ("Site B", "accepted", 2)]


def test_sites_receive_every_sites_numbers_of_earlier_rounds(finished_run):
    events = read_events(finished_run / "Site A.jsonl")
    shared = [(event["round"], event["site"]) for event in events if event["kind"] == "site-metrics"]
    assert sorted(shared) == [(1, "Site A"), (1, "Site B"), (2, "Site A"), (2, "Site B")]


def test_with_share_site_metrics_off_no_site_hears_of_another(server_identity, site_dirs, tmp_path):
    path = tmp_path / "server.toml"
    text = server_toml("run", rounds=2)
    path.write_text(text.replace("[federation]\n", "[federation]\nshare_site_metrics = false\n"))
    grid = two_sites(site_dirs, tmp_path)
    configs = []
    deliver = grid.answer

    def answer(message):
        configs.append(dict(message.content.config_records["config"]))
        return deliver(message)

    grid.answer = answer
    run_server(grid, load_server_config(path), resume=False)
    assert sum("model" in config for config in configs) == 6  # 2 sites x (2 train + 1 evaluate) messages
    assert not any("site-history" in config for config in configs)
    for site in ("Site A", "Site B"):
        events = read_events(tmp_path / f"{site}.jsonl")
        assert not [event for event in events if event["kind"] == "site-metrics"]


def test_resume_continues_after_the_checkpointed_round(two_site_run, server_identity):
    grid, path, run_dir = two_site_run
    path.write_text(path.read_text().replace("rounds = 2", "rounds = 3"))
    with pytest.raises(ConfigError, match="already holds a run"):
        run_server(grid, load_server_config(path), resume=False)
    delivered_before = len(grid.delivered)
    run_server(grid, load_server_config(path), resume=True)
    assert {(r, kind) for r, _, kind in grid.delivered[delivered_before:]} == {(3, "train"), (3, "evaluate")}
    assert load_checkpoint(run_dir / "model.pt").round == 3
    rounds = sorted({(r.round, r.phase) for r in read_metrics(run_dir / METRICS_NAME)})
    assert rounds == [(1, "train"), (2, "evaluate"), (2, "train"), (3, "evaluate"), (3, "train")]


def test_resume_keeps_the_checkpoints_plan_and_never_plans_again(two_site_run, site_dirs, tmp_path):
    grid, path, run_dir = two_site_run
    planned = (run_dir / "plan.json").read_bytes()
    # Site B's data changed since: a new plan would differ, a resumed run must not make one.
    changed = write_disk_site(tmp_path / "b-now", seed=1, size=32, depth=2, spacing=(0.4, 0.4, 5.0))
    grid.sites[12] = site_context(12, "Site B", changed, tmp_path)
    assert union_plan(site_dirs[0], changed) != union_plan(*site_dirs)
    path.write_text(path.read_text().replace("rounds = 2", "rounds = 3"))
    run_server(grid, load_server_config(path), resume=True)
    assert "query" not in {kind for _, _, kind in grid.delivered}
    assert [model_from_json(model).plan for model in grid.models] == [union_plan(*site_dirs)] * 4
    assert (run_dir / "plan.json").read_bytes() == planned
    assert load_checkpoint(run_dir / "model.pt").plan == union_plan(*site_dirs)
    plans = [event for event in read_events(run_dir / EVENTS_NAME) if event["kind"] == "plan"]
    assert [event["source"] for event in plans] == ["fingerprints", "checkpoint"]


def test_resume_refuses_a_run_folder_of_another_model(two_site_run):
    grid, path, _ = two_site_run
    path.write_text(path.read_text().replace("channels = [8, 16]", "channels = [8, 32]"))
    with pytest.raises(ConfigError, match="other \\[model\\] settings"):
        run_server(grid, load_server_config(path), resume=True)


def test_resume_refuses_a_plan_override_the_run_did_not_follow(two_site_run):
    grid, path, _ = two_site_run
    path.write_text(path.read_text() + "patch_size = [32, 32]\n")
    expected = (r"follows a plan with patch_size \[20, 20\], but server.toml's \[model\] patch_size is "
                r"\[32, 32\]; a resumed run keeps its plan")
    with pytest.raises(ConfigError, match=expected):
        run_server(grid, load_server_config(path), resume=True)


def test_a_failing_site_is_recorded_and_the_others_carry_the_round(server_identity, site_dirs, tmp_path):
    broken = tmp_path / "empty-site"
    broken.mkdir()
    grid = two_sites([site_dirs[0], broken], tmp_path)
    state = run_server(grid, load_server_config(write_config(tmp_path, rounds=1)), resume=False)
    statuses = {(r.phase, r.node_id): r.status for r in state.records}
    assert statuses == {("train", 11): "accepted", ("train", 12): "site-error",
                        ("evaluate", 11): "accepted", ("evaluate", 12): "site-error"}
    assert all(np.isfinite(array).all() for array in state.arrays.values())
    assert "empty-site" not in (tmp_path / "run" / METRICS_NAME).read_text()


def test_model_of_builds_what_server_toml_describes_with_the_runs_plan(tmp_path):
    training = model_of(load_server_config(write_config(tmp_path, rounds=1)), PLAN)
    assert (training.labels, training.plan) == (LABELS, PLAN)
    assert (training.network.channels, training.network.out_channels) == ((8, 16), 2)
    assert (training.augmentation, training.batch_size) == ("none", 4)
    path = write_config(tmp_path, rounds=1)
    path.write_text(path.read_text().replace('augmentation = "none"', 'augmentation = "gin"\n'
                                             "augmentation_probability = 1.0"))
    training = model_of(load_server_config(path), PLAN)
    assert (training.augmentation, training.augmentation_probability) == ("gin", 1.0)


def test_the_server_app_needs_the_server_config_in_its_run_config():
    context = Context(run_id=1, node_id=0, node_config={}, state=RecordDict(), run_config={"resume": False})
    with pytest.raises(ConfigError, match="server-config"):
        server_app.main(None, context)


def test_the_app_project_passes_flowers_own_validation(tmp_path):
    config, warnings = load_and_validate(write_app_project(tmp_path / "app") / "pyproject.toml")
    components = config["tool"]["flwr"]["app"]["components"]
    assert components == {"serverapp": "federation.server_app:app", "clientapp": "federation.client_app:app"}
    assert config["tool"]["flwr"]["app"]["config"] == {"server-config": "", "resume": False}
    assert warnings == []


def test_a_metrics_file_of_another_kind_is_a_checkpoint_error(tmp_path):
    from segmentation.errors import CheckpointError

    (tmp_path / METRICS_NAME).write_text(json.dumps({"unexpected": 1}) + "\n")
    with pytest.raises(CheckpointError, match="not a metrics file"):
        read_metrics(tmp_path / METRICS_NAME)
    shutil.rmtree(tmp_path)
    assert read_metrics(tmp_path / METRICS_NAME) == []
