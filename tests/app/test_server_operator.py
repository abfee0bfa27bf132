"""The operator's controller without Qt: the server form written as server.toml and read back by the
server's own loader, its mistakes as one sentence naming the file, saving that never loses a file, the
server's state rebuilt from a recorded events file, and a refused start reported in the child's words."""

import time
import tomllib
from dataclasses import replace

import pytest

from app.models.server import ServerRun, ServerState, SiteSeen
from app.services.server_operator import (
    ServerForm,
    ServerOperator,
    TlsForm,
    certificates_for_this_computer,
    check_start,
    load_server_form,
    public_context_fingerprint,
    public_key_fingerprint,
    save_server_toml,
)
from federation.certificates import generate_tls_files
from federation.config import FederationSettings, ModelSettings, load_server_config
from federation.he.context import write_he_keys
from federation.keys import generate_node_keys
from federation.validation import ValidationLimits
from segmentation.errors import ConfigError
from segmentation.events import EventWriter


@pytest.fixture
def keys(tmp_path):
    """Two sites' public keys, HE contexts and a CA with a server certificate, as the operator gets them."""
    a, b = generate_node_keys(tmp_path / "keys", "site-a"), generate_node_keys(tmp_path / "keys", "site-b")
    he = write_he_keys(tmp_path / "he")
    tls = generate_tls_files(tmp_path / "certs", ["localhost"])
    return {"sites": (a, b), "he": he, "tls": tls}


def full_form(keys) -> ServerForm:
    """A form with a value other than the default in every table."""
    tls = keys["tls"]
    return ServerForm(
        host="127.0.0.1", fleet_port=9300, run_dir="runs/first",
        federation=FederationSettings(rounds=7, min_sites=3, fraction=0.5, strategy="fedprox",
                                      proximal_mu=0.01, round_timeout=90.0, local_epochs=2,
                                      personalise_epochs=3,
                                      augmentation="randconv", augmentation_probability=0.8,
                                      share_site_metrics=False, min_valid_replies=2),
        model=ModelSettings(labels=("background", "liver", "spleen"), channels=(16, 32, 64), batch_size=4,
                            learning_rate=0.002, target_spacing=(1.5, 1.5, 3.0), patch_size=(96, 128)),
        validation=ValidationLimits(max_num_examples=5000, norm_outlier_k=3.0, norm_min_spread=0.25),
        tls=TlsForm(True, str(tls.ca_certificate), str(tls.certificate), "../certs/server.key"),
        site_public_keys=tuple(str(pair.public_key) for pair in keys["sites"]),
        he_public_context=str(keys["he"].public_context),
    )


def test_the_form_round_trips_through_server_toml(tmp_path, keys):
    form = full_form(keys)
    path = tmp_path / "operator" / "server.toml"
    saved = save_server_toml(form, path)
    config = load_server_config(path)
    assert saved == config
    assert (config.host, config.fleet_port, config.run_dir) == ("127.0.0.1", 9300,
                                                                 tmp_path / "operator" / "runs" / "first")
    assert config.federation == form.federation and config.model == form.model
    assert config.validation == form.validation
    assert (config.tls.enabled, config.tls.private_key) == (True, tmp_path / "certs" / "server.key")
    assert config.tls.ca_certificate == keys["tls"].ca_certificate
    assert config.site_public_keys == tuple(pair.public_key for pair in keys["sites"])
    assert (config.he.enabled, config.he.context, config.he.fingerprint) == (
        True, keys["he"].public_context, keys["he"].fingerprint)
    # ... and an opened file gives back the same settings.
    reopened = load_server_form(path)
    again = tmp_path / "copy" / "server.toml"
    save_server_toml(reopened, again)
    assert replace(load_server_config(again), source=path) == config


def test_the_default_form_is_a_runnable_server_toml_without_unused_keys(tmp_path):
    path = tmp_path / "server.toml"
    save_server_toml(ServerForm(), path)
    written = tomllib.loads(path.read_text())
    assert "proximal_mu" not in written["federation"]  # fedavg: the loader refuses one that is not 0
    assert "patch_size" not in written["model"] and "public_context" not in written["he"]
    assert written["tls"] == {"enabled": True} and written["auth"] == {"site_public_keys": []}
    config = load_server_config(path)
    assert (config.federation.rounds, config.federation.min_sites, config.he.enabled) == (10, 2, False)
    assert config.tls.generate and config.run_dir == tmp_path / "run"


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (lambda form, keys: replace(form, model=replace(form.model, labels=("background",))),
         "[model] labels must be a list of at least 2 different names"),
        (lambda form, keys: replace(form, federation=replace(form.federation, proximal_mu=0.0)),
         '[federation] proximal_mu must be above 0 with strategy = "fedprox"'),
        (lambda form, keys: replace(form, tls=TlsForm(True, str(keys["tls"].ca_certificate))),
         "[tls] certificate is missing"),
        (lambda form, keys: replace(form, he_public_context=str(keys["he"].secret_context)),
         "[he] public_context is not usable"),
        (lambda form, keys: replace(form, site_public_keys=(str(keys["sites"][0].private_key),)),
         "[auth] site_public_keys[0] is not usable"),
        (lambda form, keys: replace(form, model=replace(form.model, patch_size=(90, 128))),
         "[model] patch_size must be multiples of 4"),
    ],
)
def test_a_wrong_form_is_one_sentence_naming_the_file_and_nothing_is_written(tmp_path, keys, change,
                                                                             expected):
    path = tmp_path / "operator" / "server.toml"
    with pytest.raises(ConfigError) as raised:
        save_server_toml(change(full_form(keys), keys), path)
    message = str(raised.value)
    assert message.startswith(f"{path}: ") and expected in message and "\n" not in message
    assert list(path.parent.iterdir()) == []  # no file, and no draft left behind


def test_saving_over_a_file_asks_and_keeps_the_old_one(tmp_path):
    path = tmp_path / "server.toml"
    path.write_text("# the operator's own notes\n")
    with pytest.raises(ConfigError, match="server.toml already exists"):
        save_server_toml(ServerForm(), path)
    assert path.read_text() == "# the operator's own notes\n"

    save_server_toml(ServerForm(), path, replace_existing=True)
    backups = list(tmp_path.glob("server.toml.backup-*"))
    assert len(backups) == 1 and backups[0].read_text() == "# the operator's own notes\n"
    assert load_server_config(path).federation.rounds == 10

    save_server_toml(ServerForm(), path)  # the same text again: nothing to replace, nothing to back up
    save_server_toml(replace(ServerForm(), fleet_port=9400), path, replace_existing=True)
    assert len(list(tmp_path.glob("server.toml.backup-*"))) == 2
    assert load_server_config(path).fleet_port == 9400


def test_fingerprints_are_the_ones_the_key_files_carry(keys, tmp_path):
    pair = keys["sites"][0]
    assert public_key_fingerprint(pair.public_key) == pair.fingerprint
    assert public_context_fingerprint(keys["he"].public_context) == keys["he"].fingerprint
    with pytest.raises(ConfigError, match="holds a secret key"):
        public_context_fingerprint(keys["he"].secret_context)


def test_certificates_for_this_computer_are_made_once_where_the_server_looks(tmp_path):
    toml = tmp_path / "server.toml"
    tls = certificates_for_this_computer(toml, "runs/a", "127.0.0.1")
    assert tls.ca_certificate == str(tmp_path / "runs" / "a" / "tls" / "ca.crt")
    ca = (tmp_path / "runs" / "a" / "tls" / "ca.crt").read_bytes()
    assert certificates_for_this_computer(toml, "runs/a", "127.0.0.1") == tls
    assert (tmp_path / "runs" / "a" / "tls" / "ca.crt").read_bytes() == ca  # sites already trust it: kept
    # ... where the server looks when server.toml names no files (federation.launch.server_tls)
    from federation.launch import server_tls

    save_server_toml(replace(ServerForm(), run_dir="runs/a"), toml)
    assert server_tls(load_server_config(toml)).ca_certificate == tmp_path / "runs" / "a" / "tls" / "ca.crt"
    assert (tmp_path / "runs" / "a" / "tls" / "ca.crt").read_bytes() == ca
    default = certificates_for_this_computer(toml, "", "127.0.0.1")  # an empty field: the form's default
    assert default.ca_certificate == str(tmp_path / "run" / "tls" / "ca.crt")


def write_resumed_run(path):
    """A server's events.jsonl of 3 rounds and 2 sites, stopped after round 1 and continued: what the
    ServerApp writes (federation.server_run), in its order."""
    def metrics(events, number, dice, phase="train"):
        for site, status, value in (("CT Hospital", "accepted", dice), ("MR Clinic", "accepted", dice / 2)):
            key = "before/dice" if phase == "train" else "dice"
            events.emit("site-metrics", round=number, site=site, phase=phase, status=status, num_examples=8,
                        metrics={key: value})

    with EventWriter(path, "server") as events:
        events.emit("started", rounds=3, round=0)
        events.emit("plan", source="fingerprints", description="2D, 1.5 x 1.5 mm in-plane, patch 96 x 128",
                    plan={}, sites=[{"site": "CT Hospital", "status": "accepted"},
                                    {"site": "MR Clinic", "status": "accepted"},
                                    {"site": "Old Scanner", "status": "other-labels"}])
        metrics(events, 1, 0.2)
        events.emit("checkpoint", round=1)
    with EventWriter(path, "server") as events:  # the operator stopped the server; Start continued it
        events.emit("started", rounds=3, round=1)
        events.emit("plan", source="checkpoint", description="2D, 1.5 x 1.5 mm in-plane, patch 96 x 128",
                    plan={})
        metrics(events, 2, 0.4)
        events.emit("checkpoint", round=2)
        metrics(events, 3, 0.6)
        events.emit("checkpoint", round=3)
        metrics(events, 3, 0.7, phase="evaluate")
        events.emit("finished", metrics={"dice": 0.7})


def test_the_state_follows_a_recorded_resumed_run(tmp_path):
    from segmentation.events import read_events

    path = tmp_path / "events.jsonl"
    write_resumed_run(path)
    run = ServerRun()
    seen = []
    for event in read_events(path):
        run.apply_all([event])
        seen.append((event["kind"], run.state, run.round_in_progress, run.completed))
    assert seen == [
        ("started", ServerState.WAITING, None, 0),
        ("plan", ServerState.RUNNING, 1, 0),
        ("site-metrics", ServerState.RUNNING, 1, 0), ("site-metrics", ServerState.RUNNING, 1, 0),
        ("checkpoint", ServerState.RUNNING, 2, 1),
        ("started", ServerState.WAITING, None, 1),
        ("plan", ServerState.RUNNING, 2, 1),
        ("site-metrics", ServerState.RUNNING, 2, 1), ("site-metrics", ServerState.RUNNING, 2, 1),
        ("checkpoint", ServerState.RUNNING, 3, 2),
        ("site-metrics", ServerState.RUNNING, 3, 2), ("site-metrics", ServerState.RUNNING, 3, 2),
        ("checkpoint", ServerState.RUNNING, None, 3),
        ("site-metrics", ServerState.RUNNING, None, 3), ("site-metrics", ServerState.RUNNING, None, 3),
        ("finished", ServerState.FINISHED, None, 3),
    ]
    assert run.message == "finished after 3 round(s)" and run.fraction == 1.0
    assert run.sites() == [SiteSeen("CT Hospital", 3, "accepted"), SiteSeen("MR Clinic", 3, "accepted"),
                           SiteSeen("Old Scanner", 0, "other-labels")]
    assert run.metrics.dice_by_site() == {"CT Hospital": [(1, 0.2), (2, 0.4), (3, 0.7)],
                                          "MR Clinic": [(1, 0.1), (2, 0.2), (3, 0.35)]}
    assert run.metrics.plan_line() == ("Plan: 2D, 1.5 x 1.5 mm in-plane, patch 96 x 128 (kept from the "
                                       "run's checkpoint)")


def test_a_stop_asked_for_is_not_hidden_by_later_events_and_an_error_fails_the_run():
    run = ServerRun()
    run.apply_all([{"kind": "started", "rounds": 2, "round": 0}])
    run.set_state(ServerState.STOPPING, "stopping")
    run.apply_all([{"kind": "plan", "description": "2D", "source": "fingerprints", "sites": []}])
    assert (run.state, run.message) == (ServerState.STOPPING, "stopping")
    other = ServerRun()
    other.apply_all([{"kind": "started", "rounds": 2, "round": 0},
                     {"kind": "error", "code": "PlanningError", "message": "no site has the labels"}])
    assert (other.state, other.message) == (ServerState.FAILED, "no site has the labels")
    assert other.metrics.plan_line() == "Planning failed: no site has the labels"


def test_a_run_folder_with_a_model_can_only_be_continued_and_a_refused_start_is_one_sentence(tmp_path):
    path = tmp_path / "server.toml"
    save_server_toml(replace(ServerForm(), host="127.0.0.1"), path)
    assert check_start(path).existing_run == ""
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "model.pt").write_bytes(b"")
    check = check_start(path)
    assert "already holds a run (model.pt); continue it with --resume" in check.existing_run

    operator = ServerOperator()
    operator.start(check.config, resume=False)  # the server itself refuses, before it starts anything
    assert operator.run.state is ServerState.STARTING and operator.running
    deadline = time.monotonic() + 120
    while operator.running and time.monotonic() < deadline:
        time.sleep(0.2)
    assert operator.poll() == check.existing_run
    assert operator.run.state is ServerState.FAILED and operator.run.message == check.existing_run
    assert operator.poll() is None  # reported once
    assert not (tmp_path / "run" / "flower").exists()


def test_the_run_shows_what_each_round_cost_and_a_round_trained_again_keeps_its_latest():
    def summary(number: int, wall: float, status: str) -> dict:
        return {"round": number, "wall_s": wall, "work_s": 3.0, "overhead_s": wall - 3.0, "sites": [
            {"site": "CT Hospital", "status": status, "work_s": 3.0,
             "array_bytes_sent": 10240, "array_bytes_received": 5120}]}

    run = ServerRun()
    run.apply_all([{"kind": "started", "rounds": 3, "round": 0},
                   {"kind": "checkpoint", "round": 1, "summary": summary(1, 4.0, "accepted")},
                   {"kind": "checkpoint", "round": 2, "summary": summary(2, 9.0, "non-finite")}])
    run.apply_all([{"kind": "started", "rounds": 3, "round": 1},  # resumed after round 1
                   {"kind": "checkpoint", "round": 2, "summary": summary(2, 5.0, "accepted")},
                   {"kind": "checkpoint", "round": 3}])  # no summary: left out, the run goes on
    header, rows = run.cost_table()
    assert header == ["round", "wall s", "slowest site s", "overhead s", "CT Hospital (KiB in/out)"]
    assert rows == [["1", "4.0", "3.0", "1.0", "accepted 5.0/10.0"],
                    ["2", "5.0", "3.0", "2.0", "accepted 5.0/10.0"]]
    assert run.completed == 3
