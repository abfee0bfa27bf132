"""federation.flower_internals, the one module that reaches into Flower's private code: these tests fail
loudly when the pinned Flower no longer has what it patches or calls, or no longer waits the way it did."""

from __future__ import annotations

import inspect
import os

import pytest

from federation import flower_internals
from federation.flower_internals import FlowerVersionError, check_flower_version


def test_it_refuses_another_flower_version(monkeypatch):
    check_flower_version()  # the installed one: the pin and WRITTEN_FOR agree
    monkeypatch.setattr(flower_internals, "version", lambda name: "1.43.0")
    with pytest.raises(FlowerVersionError, match="written for Flower 1.42.0, but Flower 1.43.0"):
        check_flower_version()


def test_the_supernode_waits_it_shortens_are_still_flowers_own():
    from flwr.supernode import start_client_internal

    source = inspect.getsource(start_client_internal)
    assert "import time\n" in source  # the module's clock is what shorten_supernode_waits replaces
    assert source.count("time.sleep(3)") == 1 and source.count("time.sleep(0.5)") == 2


def test_shortened_supernode_sleeps(monkeypatch):
    from flwr.supernode import start_client_internal

    slept: list[float] = []
    monkeypatch.setattr(start_client_internal, "time", start_client_internal.time)  # undone afterwards
    monkeypatch.setattr(flower_internals.time, "sleep", slept.append)
    flower_internals.shorten_supernode_waits(idle=0.2, local=0.05)
    start_client_internal.time.sleep(3)  # the idle wait between pulls
    start_client_internal.time.sleep(0.5)  # waiting for a reply in its own state
    assert slept == [0.2, 0.05]
    assert start_client_internal.time.monotonic is flower_internals.time.monotonic  # the rest is time's


def test_object_pulls_back_off_briefly(monkeypatch):
    from flwr.supercore import constant
    from flwr.supercore.inflatable import inflatable_utils

    pulls = (inflatable_utils.pull_objects, inflatable_utils.pull_and_inflate_object_from_tree)
    for pull in pulls:
        assert pull.__kwdefaults__["initial_backoff"] == constant.PULL_INITIAL_BACKOFF == 1
        monkeypatch.setitem(pull.__kwdefaults__, "initial_backoff", pull.__kwdefaults__["initial_backoff"])
        monkeypatch.setitem(pull.__kwdefaults__, "backoff_cap", pull.__kwdefaults__["backoff_cap"])
    flower_internals.shorten_object_pulls(initial=0.05, cap=2.0)
    for pull in pulls:
        assert (pull.__kwdefaults__["initial_backoff"], pull.__kwdefaults__["backoff_cap"]) == (0.05, 2.0)


def test_the_clientapp_io_it_uses_is_still_there():
    """What serve_client_tasks and run_client_task call, with the signatures they call it with."""
    from flwr.proto.runtime_pb2 import AcquireTaskRequest, SendTaskHeartbeatRequest
    from flwr.supercore.superexec.run_superexec import _SUPEREXEC_AUTH_METHODS
    from flwr.supernode.runtime import run_clientapp

    assert "/flwr.proto.Runtime/AcquireTask" in _SUPEREXEC_AUTH_METHODS
    assert AcquireTaskRequest(supported_task_types=[flower_internals.CLIENTAPP_TASK]).supported_task_types
    assert SendTaskHeartbeatRequest() is not None
    assert list(inspect.signature(run_clientapp.pull_task_input).parameters) == ["client"]
    assert list(inspect.signature(run_clientapp.push_message).parameters) == ["client", "message", "context"]
    assert list(inspect.signature(run_clientapp.push_task_output).parameters) == [
        "client", "context", "sub_status", "details"]


def test_the_parent_monitor_still_asks_pid_exists_by_name():
    """notice_a_zombie_parent replaces app_utils._pid_exists, which the monitor must look up on every
    pass (a running monitor then follows) and which must still be the os.kill(pid, 0) check."""
    from flwr.supercore import app_utils

    monitor = inspect.getsource(app_utils.start_parent_process_monitor)
    assert "if not _pid_exists(parent_pid):" in monitor
    assert "os.kill(pid, 0)" in inspect.getsource(app_utils._pid_exists)


def test_a_zombie_parent_counts_as_gone(monkeypatch):
    """A child that exited but is not reaped is a zombie: Flower's check says it exists, the patched one
    that it is gone; a live process still exists."""
    import subprocess
    import sys
    import time
    from pathlib import Path

    from flwr.supercore import app_utils

    monkeypatch.setattr(app_utils, "_pid_exists", app_utils._pid_exists)  # undone afterwards
    child = subprocess.Popen([sys.executable, "-c", "pass"])  # not waited for: a zombie once it exits
    try:
        deadline = time.monotonic() + 30
        while " Z " not in Path(f"/proc/{child.pid}/stat").read_text() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert app_utils._pid_exists(child.pid)  # Flower's own check is fooled by the zombie
        flower_internals.notice_a_zombie_parent()
        flower_internals.notice_a_zombie_parent()  # twice is once
        assert not app_utils._pid_exists(child.pid)
        assert app_utils._pid_exists(os.getpid())
    finally:
        child.wait()
    assert not app_utils._pid_exists(child.pid)  # reaped: gone for both checks
