"""The site worker: it serves its SuperNode's ClientApp tasks (the end-to-end tests run it in every
federation), loads no engine where it must not, never outlives its site and refuses a missing secret."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

from federation.processes import free_port


def test_an_idle_worker_ends_when_its_site_process_is_killed(tmp_path):
    """`fedseg site` SIGKILLed while its worker waits for tasks: the worker must not outlive it."""
    secret, log = tmp_path / "task-secret", tmp_path / "worker.log"
    secret.write_bytes(b"s" * 32)
    parent = subprocess.Popen(  # stands in for `fedseg site`: starts the worker, then waits
        [sys.executable, "-c", textwrap.dedent(f"""
            import os, subprocess, sys, time
            with open({str(log)!r}, "wb") as log:
                worker = subprocess.Popen([sys.executable, "-m", "app.cli", "_site-worker",
                                           "--runtime-address", "127.0.0.1:{free_port()}",
                                           "--secret-file", {str(secret)!r},
                                           "--parent-pid", str(os.getpid())], stdout=log, stderr=log)
            print(worker.pid, flush=True)
            time.sleep(600)
        """)], stdout=subprocess.PIPE, text=True)
    worker_pid = int(parent.stdout.readline())
    try:
        deadline = time.monotonic() + 120
        while "serving the ClientApp tasks" not in log.read_text(errors="replace"):  # the engine is loaded
            assert time.monotonic() < deadline and _running(worker_pid), log.read_text(errors="replace")
            time.sleep(0.5)
        time.sleep(1.0)  # waiting for a SuperNode that is not there, idle
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


def test_a_worker_without_its_secret_stops_with_a_clear_error(tmp_path):
    done = subprocess.run([sys.executable, "-m", "app.cli", "_site-worker", "--runtime-address",
                           "127.0.0.1:1", "--secret-file", str(tmp_path / "missing")],
                          capture_output=True, text=True)
    assert done.returncode != 0
    assert "cannot read its secret" in done.stderr and "missing" in done.stderr


def test_the_clientapp_and_the_supernode_side_load_no_engine():
    """Importing the ClientApp (a stock flwr-clientapp does, per message), the worker's transport and
    Flower's internals (the SuperNode process imports them) must stay light."""
    code = ("import sys, federation.client_app, federation.site_worker, federation.site_protocol, "
            "federation.flower_internals; "
            "print(sorted(name for name in ('torch', 'monai') if name in sys.modules))")
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert loaded.strip() == "[]"
