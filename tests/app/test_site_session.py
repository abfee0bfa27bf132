"""The Federation page's controllers without Qt: the site session (join, connection state from events,
join timeout, leave), the demo session (join once, stop leaves first, no report promised when none was
written), the plaintext choice, the [privacy] and the [he] masking settings the form writes and the channel
the page shows."""

from __future__ import annotations

import time
import tomllib
from pathlib import Path

import pytest

from app.models.federation import Channel, SiteRun, SiteState
from app.models.metrics import FederationMetrics
from app.services import site_session
from app.services.federation_site import SiteForm, write_site_config
from app.services.site_session import DemoSession, SiteSession
from federation.config import load_site_config
from federation.he.context import write_he_keys
from federation.he.masking_settings import MaskingSettings
from federation.keys import generate_node_keys
from federation.processes import free_port
from segmentation.errors import ConfigError
from segmentation.settings import PrivacySettings
from segmentation.synth import generate_dataset


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    return generate_dataset(tmp_path_factory.mktemp("data"), "ct", 2, 0, size=16).root


def form(dataset: Path, **changes) -> SiteForm:
    fields = {"name": "CT Hospital", "modality": "ct", "data_dir": str(dataset),
              "server_address": f"127.0.0.1:{free_port()}", "clientappio_port": free_port(), **changes}
    return SiteForm(**fields)


def wait(condition, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.2)


def test_no_tls_needs_the_explicit_choice_and_then_says_so(dataset, tmp_path):
    with pytest.raises(ConfigError, match="unencrypted connection"):
        form(dataset).check()
    form(dataset, unencrypted=True).check()
    config = load_site_config(_written(form(dataset, unencrypted=True), tmp_path))
    assert not config.tls_enabled and config.join_timeout == 60.0
    channel = form(dataset, unencrypted=True).channel()
    assert channel == Channel(tls=False, node_auth=False, he=False)
    assert "UNENCRYPTED" in channel.sentence() and ("No TLS: unencrypted", "bad") in channel.badges()
    protected = Channel(tls=True, node_auth=True, he=True, dp=True)
    assert [tone for _, tone in protected.badges()] == ["good"] * 4
    assert "cannot read" in protected.sentence() and "UNENCRYPTED" not in protected.sentence()


def test_the_privacy_the_form_chose_is_the_site_tomls_and_shows_as_a_dp_badge(dataset, tmp_path):
    plain = load_site_config(_written(form(dataset, unencrypted=True), tmp_path))
    assert plain.privacy == PrivacySettings(dp=False, noise_multiplier=1.5, max_grad_norm=1.0, delta=1e-5,
                                            epsilon_budget=10.0)
    private = form(dataset, unencrypted=True, dp=True, noise_multiplier=0.8, max_grad_norm=2.0, delta=1e-6,
                   epsilon_budget=4.0)
    config = write_site_config(private, tmp_path / "private")
    assert config.privacy == PrivacySettings(dp=True, noise_multiplier=0.8, max_grad_norm=2.0, delta=1e-6,
                                             epsilon_budget=4.0)
    assert private.channel().badges()[3] == ("DP", "good") and "differentially private" in \
        private.channel().sentence()
    assert form(dataset).channel().badges()[3] == ("No DP", "")
    assert "differentially private" not in form(dataset).channel().sentence()


@pytest.mark.parametrize(("change", "sentence"), [
    ({"delta": 1.0}, "privacy delta must lie between 0 and 1, got 1.0"),
    ({"noise_multiplier": 0.0},
     "privacy noise_multiplier must be a number above 0 (no noise gives no privacy), got 0.0"),
    ({"epsilon_budget": float("nan")}, "privacy epsilon_budget must be a number above 0, got nan"),
])
def test_refused_privacy_numbers_are_one_sentence_and_no_file_is_written(dataset, tmp_path, change, sentence):
    refused = form(dataset, unencrypted=True, dp=True, **change)
    assert refused.privacy_problem() == sentence
    with pytest.raises(ConfigError) as raised:
        write_site_config(refused, tmp_path / "site")
    assert str(raised.value) == sentence and not (tmp_path / "site").exists()
    assert form(dataset, unencrypted=True, dp=True).privacy_problem() == ""


@pytest.fixture(scope="module")
def he_context(tmp_path_factory) -> Path:
    return write_he_keys(tmp_path_factory.mktemp("he")).secret_context


@pytest.fixture(scope="module")
def peers(tmp_path_factory) -> Path:
    """A folder of three sites' node key pairs: their .pub files are the federation's node public keys."""
    folder = tmp_path_factory.mktemp("peers")
    for name in ("CT-Hospital", "MR-T1", "MR-T2"):
        generate_node_keys(folder, name)
    return folder


def test_the_masking_settings_are_written_only_with_he_and_read_back_the_same(dataset, tmp_path, he_context,
                                                                               peers):
    node_key = str(peers / "CT-Hospital.key")
    plain = form(dataset, unencrypted=True, node_key=node_key, peer_keys=str(peers), min_mask_sites=2)
    assert tomllib.loads(plain.to_toml(tmp_path / "events.jsonl"))["he"] == {}
    assert write_site_config(plain, tmp_path / "plain").masking == MaskingSettings(peers / "CT-Hospital.key")
    masked = form(dataset, unencrypted=True, node_key=node_key, he_context=str(he_context),
                  peer_keys=str(peers), min_mask_sites=2)
    assert tomllib.loads(masked.to_toml(tmp_path / "events.jsonl"))["he"] == {
        "enabled": True, "secret_context": str(he_context), "peer_keys": str(peers), "min_mask_sites": 2}
    config = write_site_config(masked, tmp_path / "masked")
    assert config.masking == masked.masking() == MaskingSettings(peers / "CT-Hospital.key", peers, 2)
    assert len(config.masking.pinned()) == 3
    unpinned = form(dataset, unencrypted=True, he_context=str(he_context))
    assert tomllib.loads(unpinned.to_toml(tmp_path / "events.jsonl"))["he"] == {
        "enabled": True, "secret_context": str(he_context), "min_mask_sites": 3}
    assert write_site_config(unpinned, tmp_path / "unpinned").masking == MaskingSettings() == \
        unpinned.masking()
    masked_channel = masked.channel().sentence()
    assert "masked" in masked_channel and "masked" not in plain.channel().sentence()


def _folder(tmp_path: Path, kind: str) -> Path:
    """A peer key folder that cannot be used: missing, a file, empty, or holding a .pub that is no key."""
    path = tmp_path / kind
    if kind == "file":
        path.write_text("not a folder")
    elif kind != "missing":
        path.mkdir()
    if kind == "not-a-key":
        (path / "site.pub").write_text("ssh-rsa AAAA not an ECDSA key\n")
    return path


@pytest.mark.parametrize(("change", "sentence"), [
    ({"min_mask_sites": 1}, "min_mask_sites must be an integer of at least 2, got 1"),
    ({"min_mask_sites": 2.5}, "min_mask_sites must be an integer of at least 2, got 2.5"),
    ({"peer_keys": "missing"}, "the peer key folder {folder} does not exist"),
    ({"peer_keys": "file"}, "the peer key folder {folder} is not a folder"),
    ({"peer_keys": "empty"}, "the peer key folder {folder} holds no .pub files"),
    ({"peer_keys": "not-a-key"}, "{folder}/site.pub is not an ECDSA public key in OpenSSH format"),
])
def test_refused_masking_settings_are_one_sentence_and_no_file_is_written(dataset, tmp_path, he_context,
                                                                         change, sentence):
    folder = _folder(tmp_path, change["peer_keys"]) if "peer_keys" in change else None
    changes = {**change, "peer_keys": str(folder)} if folder is not None else change
    refused = form(dataset, unencrypted=True, he_context=str(he_context), **changes)
    with pytest.raises(ConfigError) as raised:
        write_site_config(refused, tmp_path / "site")
    message = str(raised.value)
    assert message.startswith(sentence.format(folder=folder)) and "\n" not in message
    assert not (tmp_path / "site").exists()
    form(dataset, unencrypted=True, **changes).check()  # without HE they are not used, so not checked


def _written(site_form: SiteForm, folder: Path) -> Path:
    path = folder / "site.toml"
    path.write_text(site_form.to_toml(folder / "events.jsonl"))
    return path


def test_connection_events_drive_the_state_not_the_log():
    run = SiteRun()
    run.apply_all([{"kind": "connection", "state": "connecting", "timeout": 60}])
    assert run.state is SiteState.CONNECTING and "60 s" in run.message
    run.apply_all([{"kind": "connection", "state": "connected"}])
    assert run.state is SiteState.WAITING
    run.apply_all([{"kind": "connection", "state": "failed", "reason": "tls",
                    "message": "TLS handshake failed"}])
    assert run.state is SiteState.FAILED and "TLS handshake failed" in run.message


def test_the_global_dice_here_of_a_round_is_the_next_rounds_starting_score():
    run = SiteRun()
    run.apply_all([{"kind": "finished", "round": number, "metrics": {"before/dice": before}}
                   for number, before in ((1, 0.1), (2, 0.35))])
    assert run.rows[1].dice_global == 0.35 and run.rows[2].dice_global is None
    # Round 3 scores round 2's global model before it trains: shown at once, not when round 3 ends.
    run.apply_all([{"kind": "started", "round": 3, "epochs": 1},
                   {"kind": "evaluation", "round": 3, "model": "global", "metrics": {"dice": 0.5}}])
    assert run.rows[2].dice_global == 0.5 and run.rows[3].dice_before == 0.5
    run.apply_all([{"kind": "evaluation", "round": 3, "model": "global", "phase": "evaluate",
                    "metrics": {"dice": 0.6}}])  # the final evaluation: round 3's own global model
    assert run.rows[3].dice_global == 0.6 and run.rows[2].dice_global == 0.5


def test_a_join_that_cannot_reach_the_server_gives_up_with_the_reason(dataset, tmp_path):
    run = SiteRun()
    session = SiteSession(run, FederationMetrics())
    session.join(form(dataset, unencrypted=True, join_timeout=2), tmp_path)
    assert run.state is SiteState.CONNECTING and session.active
    with pytest.raises(ConfigError, match="already"):
        session.join(form(dataset, unencrypted=True), tmp_path)
    failures = []
    wait(lambda: failures.append(session.poll()) or not session.active)
    failures.append(session.poll())
    assert run.state is SiteState.FAILED and "does not answer" in run.message
    assert [failure for failure in failures if failure] == [run.message]  # said once, from the event
    assert (tmp_path / "federation" / "CT-Hospital" / "site.toml").is_file()


def test_leaving_during_the_join_is_not_a_failure(dataset, tmp_path):
    run = SiteRun()
    session = SiteSession(run, FederationMetrics())
    session.join(form(dataset, unencrypted=True), tmp_path)
    wait(lambda: session.poll() is None and run.state is SiteState.CONNECTING and "giving up" in run.message)
    session.leave()
    assert run.state is SiteState.LEAVING
    wait(lambda: session.poll() is None and not session.active)
    session.poll()
    assert run.state is SiteState.LEFT


class FakeDemo:
    """A demo job that announces a site.toml and ends when told to: no processes."""

    def __init__(self, out: Path, join_site: str | None = None) -> None:
        self.out, self.join_site = out, join_site
        self.running, self.exit_code, self.announced = False, None, None

    def start(self) -> None:
        self.running = True

    def request_stop(self) -> None:
        self.running, self.exit_code = False, 130

    def joining_site_config(self) -> Path | None:
        return self.announced

    def server_events(self) -> Path | None:
        return None

    def log_tail(self, lines: int) -> str:
        return "round 1 of 3"

    def failure_message(self) -> str:
        return "boom"


class FakeSite:
    running = True
    stop_requested = False

    def request_stop(self) -> None:
        self.stop_requested, self.running = True, False


def test_the_demo_joins_once_leaves_first_and_promises_no_report_it_did_not_write(tmp_path, monkeypatch):
    monkeypatch.setattr(site_session, "DemoFederationJob", FakeDemo)
    session = SiteSession(SiteRun(), FederationMetrics())
    demo = DemoSession(session, tmp_path / "demo")
    (tmp_path / "demo").mkdir()
    (tmp_path / "demo" / "report.md").write_text("an earlier run's report")
    time.sleep(0.05)
    demo.start()
    assert demo.poll().join is None
    demo.job.announced = tmp_path / "site.toml"
    assert demo.poll().join == tmp_path / "site.toml"
    site = FakeSite()
    session.job = site  # what the page's Join started
    demo.joined_with(site)
    assert demo.poll().join is None  # joined once, never again
    demo.stop()
    assert site.stop_requested  # left before the demo was stopped
    update = demo.poll()
    assert update.ended and not update.failure
    assert update.status == "The demo federation was stopped before it wrote its report."


def test_a_demo_that_wrote_its_report_points_to_it(tmp_path, monkeypatch):
    monkeypatch.setattr(site_session, "DemoFederationJob", FakeDemo)
    demo = DemoSession(SiteSession(SiteRun(), FederationMetrics()), tmp_path)
    demo.start()
    (tmp_path / "report.md").write_text("# report")
    demo.job.running, demo.job.exit_code = False, 0
    assert demo.poll().status == f"The demo federation ended; its report is {tmp_path / 'report.md'}"


def test_the_demo_is_refused_while_the_site_is_in_a_federation(tmp_path, monkeypatch):
    monkeypatch.setattr(site_session, "DemoFederationJob", FakeDemo)
    session = SiteSession(SiteRun(), FederationMetrics())
    session.job = FakeSite()
    with pytest.raises(ConfigError, match="leave it first"):
        DemoSession(session, tmp_path).start()

