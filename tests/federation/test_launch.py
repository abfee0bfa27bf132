"""What `fedseg server`/`fedseg site` start from their TOML files, and how a site's SuperNode is kept up.

Stand-in children replace flower-supernode where only the restart policy is under test; the real
processes run in tests/e2e.
"""

import sys
import time

import pytest

import federation.launch as launch
from federation.config import SiteConfig, load_server_config
from federation.launch import EventTail, FederationSite, check_run_folder, server_tls
from federation.processes import FlowerProcessError, start_child
from segmentation.errors import ConfigError


def site_config(tmp_path) -> SiteConfig:
    return SiteConfig(
        source=tmp_path / "site.toml", name="CT Hospital", modality="ct", data_dir=tmp_path,
        event_file=tmp_path / "events.jsonl", server_address="127.0.0.1:9092", clientappio_port=9094,
        tls_enabled=True, ca_certificate=tmp_path / "ca.crt", node_private_key=None, he_secret_context=None,
    )


def fake_supernodes(monkeypatch, outputs: list[str]):
    """Each start runs a child that prints the next output and exits at once, as a SuperNode might."""
    started = []

    def start(settings, environment):
        code = f"print({outputs[len(started)]!r})"
        log = settings.state_dir / "supernode.log"
        child = start_child("flower-supernode", [sys.executable, "-c", code], {}, log)
        child.popen.wait()
        started.append(settings)
        return child

    monkeypatch.setattr(launch, "start_supernode", start)
    return started


def test_a_site_that_was_connected_is_started_again_and_so_is_its_worker(tmp_path, monkeypatch):
    started = fake_supernodes(monkeypatch, [f"INFO: SuperNode ID: {n}" for n in (42, 43, 44)])
    with FederationSite(site_config(tmp_path), restart_delay=0) as site:
        site.start()
        assert site.connected()
        site.supervise()
        assert site.restarts == 1 and len(started) == 2
        node_config = started[0].node_config
        assert node_config["site-name"] == "CT Hospital"
        assert node_config["event-file"].endswith("events.jsonl")
        assert started[0].ca_certificate == tmp_path / "ca.crt"
        # The worker takes the SuperNode's tasks with the secret both were given, the site's user's only,
        # and the same after the restart; a worker that ends comes back.
        secret = started[0].task_secret
        assert secret == started[1].task_secret and secret.stat().st_mode & 0o077 == 0
        assert len(secret.read_bytes()) == 32
        with open(f"/proc/{site.worker.pid}/cmdline", "rb") as stream:
            command = stream.read().split(b"\0")
        assert str(secret).encode() in command and started[0].runtime_address.encode() in command
        with open(f"/proc/{site.worker.pid}/environ", "rb") as stream:
            environment = stream.read().split(b"\0")
        assert b"FLWR_DISABLE_UPDATE_CHECK=1" in environment  # Flower's settings reach the worker too
        first, content = site.worker, secret.read_bytes()
        first.popen.kill()
        first.popen.wait()
        site.supervise()
        assert site.worker is not first and site.worker.alive() and secret.read_bytes() == content
        worker = site.worker
    assert not worker.alive()  # leaving the site stops its worker too


def test_a_site_that_never_got_in_stops_with_the_reason(tmp_path, monkeypatch):
    fake_supernodes(monkeypatch, ["ERROR: Failed to initialize the connection to the SuperLink."])
    with FederationSite(site_config(tmp_path), restart_delay=0) as site:
        site.start()
        with pytest.raises(FlowerProcessError, match="could not join 127.0.0.1:9092: ERROR: Failed to init"):
            site.supervise()


def test_the_event_tail_returns_complete_new_lines_only(tmp_path):
    path = tmp_path / "events.jsonl"
    path.write_text('{"kind": "old"}\n')
    tail = EventTail(path)
    with open(path, "a") as stream:
        stream.write('{"kind": "started"}\n{"kind": "prog')
    assert [event["kind"] for event in tail] == ["started"]
    with open(path, "a") as stream:
        stream.write('ress"}\nnot json\n')
    assert [event["kind"] for event in tail] == ["progress"]
    assert list(tail) == [] and [e["kind"] for e in EventTail(path, from_start=True)][0] == "old"


def test_an_existing_run_needs_resume_and_tls_files_are_made_once(tmp_path):
    (tmp_path / "server.toml").write_text(
        '[model]\nlabels = ["background", "liver"]\n[federation]\nrounds = 1\nmin_sites = 1\n'
        '[server]\nrun_dir = "run"\n')
    config = load_server_config(tmp_path / "server.toml")
    check_run_folder(config, resume=False)
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "model.pt").write_bytes(b"")
    with pytest.raises(ConfigError, match="already holds a run"):
        check_run_folder(config, resume=False)
    check_run_folder(config, resume=True)
    first = server_tls(config)
    modified = first.ca_certificate.stat().st_mtime_ns
    time.sleep(0.01)
    assert server_tls(config) == first and first.ca_certificate.stat().st_mtime_ns == modified
    assert first.ca_certificate.parent == tmp_path / "run" / "tls"
