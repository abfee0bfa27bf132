"""The site worker: a ClientApp hands it a message (train, evaluate, the fingerprint query) over an
authenticated local connection and gets the same answer the ClientApp would have computed itself; a wrong
key and a missing worker fail cleanly.
"""

import os
import secrets
import signal
import subprocess
import sys
import textwrap
import threading
import time
from multiprocessing import AuthenticationError
from multiprocessing.connection import Client

import numpy as np
import pytest
from flwr.app import MessageType
from test_client_app import TRAINING, context, fingerprint_query, instruction

from federation import client_app
from federation.processes import free_port
from federation.site_protocol import KEY_ENVIRONMENT
from federation.site_work import answer
from federation.site_worker import ask_worker, serve
from federation.task import named_weights
from segmentation.algorithm import SegmentationAlgorithm

pytestmark = pytest.mark.usefixtures("case_cache")  # conftest: each test its own case cache


@pytest.fixture(scope="module")
def worker():
    """A worker serving in this process (a daemon thread); its address and key."""
    port, key = free_port(), secrets.token_bytes(32)
    threading.Thread(target=serve, args=(port, key, lambda: answer), daemon=True).start()
    return f"127.0.0.1:{port}", key.hex()


def with_worker(site_context, address: str, key: str):
    site_context.node_config.update({"site-worker": address, "site-worker-key": key})
    return site_context


def weights_of(reply) -> dict[str, np.ndarray]:
    return {name: array.numpy() for name, array in reply.content.array_records["arrays"].items()}


def test_the_worker_answers_as_the_clientapp_itself_would(server_identity, site_dir, worker, tmp_path):
    global_weights = named_weights(SegmentationAlgorithm(TRAINING, device="cpu"))
    alone = context(site_dir, tmp_path / "alone.jsonl")
    helped = with_worker(context(site_dir, tmp_path / "helped.jsonl"), *worker)
    for server_round in (1, 2):
        message = instruction(MessageType.TRAIN, global_weights, server_round)
        expected = client_app.app(message, alone)
        reply = client_app.app(message, helped)
        assert not reply.has_error()
        for name, array in weights_of(expected).items():
            np.testing.assert_allclose(weights_of(reply)[name], array, rtol=1e-5, atol=1e-6)
        assert dict(reply.content.metric_records["metrics"]) == pytest.approx(
            dict(expected.content.metric_records["metrics"]), rel=1e-4)
    # The site's state (its kept optimizer) came back from the worker into the SuperNode's context.
    steps = [float(s.state.array_records["fedseg-optimizer"]["0/step"].numpy()) for s in (alone, helped)]
    assert steps[0] == steps[1] > 0
    assert (tmp_path / "helped.jsonl").read_text().count('"kind": "finished"') == 2


def test_the_worker_answers_the_fingerprint_query_as_the_clientapp_would(
    server_identity, site_dir, worker, tmp_path
):
    expected = client_app.app(fingerprint_query(), context(site_dir, tmp_path / "alone.jsonl"))
    helped = with_worker(context(site_dir, tmp_path / "helped.jsonl"), *worker)
    reply = client_app.app(fingerprint_query(), helped)
    assert not reply.has_error()
    assert reply.content.config_records["fingerprint"] == expected.content.config_records["fingerprint"]
    assert reply.content.config_records["site"] == expected.content.config_records["site"]


def test_a_caller_without_the_key_is_refused_and_the_worker_goes_on(
    server_identity, site_dir, worker, tmp_path
):
    address, key = worker
    with pytest.raises(AuthenticationError):
        ask_worker(address, secrets.token_hex(32), "evaluate", None, {}, None)
    site = with_worker(context(site_dir, tmp_path / "events.jsonl"), address, key)
    reply = client_app.app(instruction(MessageType.EVALUATE, {}), site)
    assert reply.has_error() and reply.error.code == 103  # the model does not fit: answered, not hung


def test_a_site_whose_worker_is_gone_answers_with_a_code_only(server_identity, site_dir, tmp_path):
    site = with_worker(context(site_dir, tmp_path / "events.jsonl"), f"127.0.0.1:{free_port()}", "00" * 32)
    reply = client_app.app(instruction(MessageType.EVALUATE, {}), site)
    assert reply.has_error() and (reply.error.code, reply.error.reason) == (100, "failed")


def test_an_idle_worker_ends_when_its_site_process_is_killed(tmp_path):
    """`fedseg site` SIGKILLed while its worker waits in accept(): the worker must not outlive it."""
    port, key = free_port(), secrets.token_hex(32)
    parent = subprocess.Popen(  # stands in for `fedseg site`: starts the worker, then waits
        [sys.executable, "-c", textwrap.dedent(f"""
            import os, subprocess, sys, time
            environment = {{**os.environ, "{KEY_ENVIRONMENT}": "{key}"}}
            worker = subprocess.Popen([sys.executable, "-m", "app.cli", "_site-worker", "--port", "{port}",
                                       "--parent-pid", str(os.getpid())], env=environment)
            print(worker.pid, flush=True)
            time.sleep(600)
        """)], stdout=subprocess.PIPE, text=True)
    worker_pid = int(parent.stdout.readline())
    try:
        deadline = time.monotonic() + 120
        while True:  # a wrong key is refused once the worker has loaded the engine and waits in accept()
            try:
                Client(("127.0.0.1", port), authkey=b"not the key").close()
            except AuthenticationError:
                break
            except OSError:
                assert time.monotonic() < deadline, "the worker never listened"
                time.sleep(0.5)
        time.sleep(1.0)  # back in accept(), idle
        parent.kill()
        parent.wait()
        deadline = time.monotonic() + 30
        while _running(worker_pid):
            assert time.monotonic() < deadline, "the worker outlived its site process"
            time.sleep(0.2)
    finally:
        if _running(worker_pid):
            os.kill(worker_pid, signal.SIGKILL)


def _running(pid: int) -> bool:
    """Alive and not a zombie (an orphan is reaped by init, but a moment later)."""
    try:
        with open(f"/proc/{pid}/stat") as stream:
            return stream.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_the_clientapp_process_loads_no_engine():
    """Flower starts a ClientApp process per message: with a site worker it must stay light."""
    code = ("import sys, federation.client_app, federation.site_worker, federation.site_protocol; "
            "print(sorted(name for name in ('torch', 'monai') if name in sys.modules))")
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert loaded.strip() == "[]"
