"""Why a site is not in the federation, from the SuperNode's log and the server's port; and `fedseg
site` giving up after its join timeout with that reason, in its exit status and its events."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest

from federation.joining import KEY_REFUSED, TIMEOUT, TLS_MISMATCH, UNREACHABLE, diagnose
from federation.processes import free_port
from segmentation.events import read_events

# What flower-supernode 1.41 and 1.42 print here with a CA that did not sign the server's certificate.
BAD_CA_LOG = """ERROR :     SSL/TLS handshake error detected.
ERROR :     Exit Code: 305
Failed to initialize the connection to the SuperLink.
[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed: unable to get local issuer certificate
"""
RETRYING_LOG = ("INFO :      Starting Flower SuperNode\n"
                "WARNING :   Connection attempt failed, retrying in 1.79 seconds\n")


@pytest.fixture
def listening():
    """HOST:PORT of a socket that accepts connections and never speaks (a server we cannot join)."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        yield f"127.0.0.1:{server.getsockname()[1]}"


def test_a_closed_port_is_unreachable():
    error = diagnose(f"127.0.0.1:{free_port()}", True, RETRYING_LOG, waited=60)
    assert error.reason == UNREACHABLE and "does not answer" in str(error)


def test_a_bad_certificate_is_a_tls_mismatch(listening):
    error = diagnose(listening, True, BAD_CA_LOG)
    assert error.reason == TLS_MISMATCH and "CERTIFICATE_VERIFY_FAILED" in str(error)


def test_plaintext_to_a_server_that_answers_is_a_tls_mismatch_and_with_tls_a_timeout(listening):
    assert diagnose(listening, False, RETRYING_LOG, waited=60).reason == TLS_MISMATCH
    error = diagnose(listening, True, RETRYING_LOG, waited=60)
    assert error.reason == TIMEOUT and "within 60 s" in str(error)


def test_an_unknown_node_key_is_refused(listening):
    log = "ERROR : StatusCode.UNAUTHENTICATED: Public key not recognized\n"
    assert diagnose(listening, True, log).reason == KEY_REFUSED


def test_fedseg_site_gives_up_after_its_join_timeout_with_the_reason(tmp_path: Path):
    data = tmp_path / "data"
    data.mkdir()
    config = tmp_path / "site.toml"
    config.write_text(f"""[site]
name = "Lonely"
modality = "ct"
data_dir = "{data}"
event_file = "events.jsonl"
[server]
address = "127.0.0.1:{free_port()}"
clientappio_port = {free_port()}
join_timeout = 2
[tls]
enabled = false
""")
    done = subprocess.run([sys.executable, "-m", "app.cli", "site", "--config", str(config)],
                          capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    assert "does not answer" in done.stderr.splitlines()[-1]
    states = [(event["state"], event.get("reason")) for event in read_events(tmp_path / "events.jsonl")
              if event["kind"] == "connection"]
    assert states == [("connecting", None), ("failed", UNREACHABLE)]
