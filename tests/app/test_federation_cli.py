"""`fedseg server`, `fedseg server status` and `fedseg site`: one-line errors before any process starts,
and the per-site, per-round table of a run folder."""

import io
import json

import pytest

from app.cli import main
from app.commands.server import RoundTable
from federation.site_history import SiteRound, write_metrics
from segmentation.events import EventWriter

SERVER_TOML = """
[model]
labels = ["background", "liver"]
[federation]
rounds = 2
min_sites = 2
[server]
run_dir = "run"
"""


def one_line_error(capsys) -> str:
    error = capsys.readouterr().err.strip()
    assert error.startswith("fedseg: error: ") and "\n" not in error
    return error


@pytest.mark.parametrize(
    ("arguments", "expected"),
    [
        (["server"], "give --config server.toml"),
        (["server", "--config", "{tmp}/absent.toml"], "the configuration file does not exist"),
        (["site", "--config", "{tmp}/absent.toml"], "the configuration file does not exist"),
        (["server", "status", "--run", "{tmp}"], "holds no federated run"),
    ],
)
def test_mistakes_are_one_line_errors(tmp_path, capsys, arguments, expected):
    assert main([argument.format(tmp=tmp_path) for argument in arguments]) == 2
    assert expected in one_line_error(capsys)


def test_a_bad_server_toml_names_the_key(tmp_path, capsys):
    (tmp_path / "server.toml").write_text(SERVER_TOML.replace("rounds = 2", "rounds = 0"))
    assert main(["server", "--config", str(tmp_path / "server.toml")]) == 2
    assert "[federation] rounds must be a positive integer, got 0" in one_line_error(capsys)


def test_an_existing_run_is_not_restarted_without_resume(tmp_path, capsys):
    (tmp_path / "server.toml").write_text(SERVER_TOML)
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "model.pt").write_bytes(b"")
    assert main(["server", "--config", str(tmp_path / "server.toml")]) == 2
    assert "already holds a run (model.pt); continue it with --resume" in one_line_error(capsys)
    assert not (tmp_path / "run" / "flower").exists()  # nothing was started


@pytest.fixture
def run_folder(tmp_path):
    """A run folder as the ServerApp leaves it after two rounds of two sites, one of which failed once."""
    run = tmp_path / "run"
    records = [
        SiteRound(1, "train", "CT Hospital", 11, "accepted", 96, 0.5,
                  {"train-loss": 0.8123, "before/dice": 0.1, "after/dice": 0.4}),
        SiteRound(1, "train", "MR Clinic", 12, "site-error"),
        SiteRound(2, "train", "CT Hospital", 11, "accepted", 96, 0.4,
                  {"before/dice": 0.41, "after/dice": 0.6, "epsilon": 3.2149}),  # a site with DP-SGD
        SiteRound(2, "evaluate", "CT Hospital", 11, "accepted", 4, None, {"dice": 0.612}),
    ]
    write_metrics(records, run)
    with EventWriter(run / "events.jsonl", "server") as events:
        events.emit("started", rounds=2, round=0)
        events.emit("plan", source="fingerprints", description="2D, 6.25 x 6.25 mm in-plane, patch 64 x 64",
                    plan={"patch_size": [64, 64]},
                    sites=[{"site": "CT Hospital", "node_id": 11, "status": "accepted", "cases": 24},
                           {"site": "MR Clinic", "node_id": 12, "status": "other-labels", "cases": None}])
        events.emit("checkpoint", round=1)
        events.emit("checkpoint", round=2)
        events.emit("finished", metrics={"dice": 0.612})
    return run


def test_status_prints_the_per_site_per_round_table(run_folder, capsys):
    assert main(["server", "status", "--run", str(run_folder)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"{run_folder}: finished, round 2 of 2"
    assert lines[1] == ("plan: 2D, 6.25 x 6.25 mm in-plane, patch 64 x 64 "
                        "(from 1 of 2 site(s)' fingerprints); left out: MR Clinic (other-labels)")
    rows = [line.split() for line in lines[4:]]
    assert len(rows) == 4 and "CT Hospital" in lines[4]
    assert rows[0][:2] == ["1", "train"] and rows[0][-4:] == ["96", "0.8123", "0.100", "0.400"]
    assert rows[1][-1] == "site-error"
    # The DP site's epsilon sits right-aligned under the last column's header, "epsilon".
    assert lines[2].endswith("epsilon") and lines[6].endswith("3.21") and len(lines[6]) == len(lines[2])
    assert rows[3][:2] == ["2", "evaluate"] and rows[3][-1] == "0.612"


def test_status_json_has_every_record_and_the_run_state(run_folder, tmp_path, capsys):
    (tmp_path / "server.toml").write_text(SERVER_TOML)
    assert main(["server", "status", "--config", str(tmp_path / "server.toml"), "--json"]) == 0
    status = json.loads(capsys.readouterr().out)
    assert (status["state"], status["round"], status["rounds"]) == ("finished", 2, 2)
    assert status["plan"]["plan"] == {"patch_size": [64, 64]} and status["plan"]["source"] == "fingerprints"
    sites = [record["site"] for record in status["records"]]
    assert sites == ["CT Hospital", "MR Clinic", "CT Hospital", "CT Hospital"]
    assert status["records"][1]["status"] == "site-error"


def test_a_run_folder_from_before_round_summaries_prints_what_it_has(run_folder, capsys):
    assert main(["server", "status", "--run", str(run_folder)]) == 0
    assert "per round" not in capsys.readouterr().out
    assert main(["server", "status", "--run", str(run_folder), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["round_summaries"] == []


# Round 1's summary as the server writes it on the checkpoint event (docs/federation.md's fields):
# 12.5 s wall, CT Hospital worked 10 s, MR Clinic answered with an error (so the slowest site's work and
# the overhead are unknown); 4 KiB went to each. In round 2 both worked, the slowest 9.5 s of 11 s.
ROUND_1 = {"round": 1, "wall_s": 12.5, "work_s": None, "overhead_s": None, "sites": [
    {"site": "CT Hospital", "status": "accepted", "work_s": 10.0,
     "array_bytes_sent": 4096, "array_bytes_received": 2048},
    {"site": "MR Clinic", "status": "site-error", "work_s": None,
     "array_bytes_sent": 4096, "array_bytes_received": 0}]}
ROUND_2 = {"round": 2, "wall_s": 11.0, "work_s": 9.5, "overhead_s": 1.5, "sites": [
    {"site": "CT Hospital", "status": "accepted", "work_s": 9.5,
     "array_bytes_sent": 4096, "array_bytes_received": 4096},
    {"site": "MR Clinic", "status": "norm-outlier", "work_s": 8.0,
     "array_bytes_sent": 4096, "array_bytes_received": 4096}]}


@pytest.fixture
def running_folder(tmp_path):
    """A run folder of a run in its third round: two rounds checkpointed with their summaries."""
    run = tmp_path / "run"
    write_metrics([SiteRound(1, "train", "CT Hospital", 11, "accepted", 96, 0.5, {"train-loss": 0.8}),
                   SiteRound(1, "train", "MR Clinic", 12, "site-error"),
                   SiteRound(2, "train", "CT Hospital", 11, "accepted", 96, 0.4, {"train-loss": 0.6})], run)
    with EventWriter(run / "events.jsonl", "server") as events:
        events.emit("started", rounds=3, round=0)
        events.emit("checkpoint", round=1, epoch=1, summary=ROUND_1)
        events.emit("checkpoint", round=2, epoch=2, summary=ROUND_2)
    return run


def test_status_prints_what_each_round_cost_while_the_run_goes_on(running_folder, capsys):
    assert main(["server", "status", "--run", str(running_folder)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"{running_folder}: running, round 2 of 3"
    start = next(index for index, line in enumerate(lines) if line.startswith("per round"))
    assert lines[start + 1].split() == ["round", "wall", "s", "slowest", "site", "s", "overhead", "s", "CT",
                                        "Hospital", "(KiB", "in/out)", "MR", "Clinic", "(KiB", "in/out)"]
    assert set(lines[start + 2]) == {"-"}
    assert [line.split() for line in lines[start + 3:]] == [
        ["1", "12.5", "-", "-", "accepted", "2.0/4.0", "site-error", "0.0/4.0"],
        ["2", "11.0", "9.5", "1.5", "accepted", "4.0/4.0", "norm-outlier", "4.0/4.0"],
    ]


def test_status_json_has_the_round_summaries(running_folder, capsys):
    assert main(["server", "status", "--run", str(running_folder), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["round_summaries"] == [ROUND_1, ROUND_2]


def test_the_followed_run_says_each_rounds_wall_time_and_overhead():
    stream = io.StringIO()
    table = RoundTable(stream)
    table.add({"kind": "checkpoint", "round": 1, "summary": ROUND_1})
    table.add({"kind": "checkpoint", "round": 2, "summary": ROUND_2})
    table.add({"kind": "checkpoint", "round": 3})  # a server of an earlier version
    assert stream.getvalue().splitlines() == ["round 1 checkpointed in 12.5 s (overhead unknown)",
                                              "round 2 checkpointed in 11.0 s (overhead 1.5 s)",
                                              "round 3 checkpointed"]
