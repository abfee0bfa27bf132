"""The one place FedSeg reaches into Flower's private code, written for Flower 1.42.0 and checked against it.

Flower's fixed waits make every round seconds longer than its work (docs/federation.md):
- an idle SuperNode sleeps 3 s between pulls, and waits in 0.5 s steps for a reply it could send at once
  (flwr/supernode/start_client_internal.py, which reads no setting for either): run_supernode() starts
  flower-supernode with that module's clock shortened;
- pulling a message whose objects are still being uploaded backs off 1 s at first, doubling up to 10 s
  (PULL_INITIAL_BACKOFF in flwr/supercore/constant.py, bound as the defaults of pull_objects and
  pull_and_inflate_object_from_tree): the SuperNode
  pulls the server's messages that way and the ServerApp the sites' replies; shorten_object_pulls()
  starts at 0.05 s and caps at 2 s in this process (the retries still end after 500 tries, as before);
- Flower's parent monitor (flwr/supercore/app_utils.py) ends a ServerApp whose parent is gone by asking
  os.kill(pid, 0), which succeeds for a zombie: a parent killed but never reaped (PID 1 of a container
  without an init reaps nothing) keeps the ServerApp of a dead SuperLink alive for good.
  notice_a_zombie_parent() counts a zombie as gone in this process;
- Flower starts a fresh flwr-clientapp process for every message, and it pays for Python, flwr's imports
  and the app's before any work. Under `flower-supernode --isolation process` Flower leaves running the
  ClientApps to whoever serves its ClientApp I/O API: serve_client_tasks() does it in one long-lived
  process, the way flwr-clientapp does it once (flwr/supernode/runtime/run_clientapp.py), for every task.

Everything here fails loudly on another Flower version (check_flower_version), and
tests/federation/test_flower_internals.py fails when the pinned Flower no longer has what it uses.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Sequence
from importlib.metadata import version
from pathlib import Path

from segmentation.errors import FedSegError

logger = logging.getLogger(__name__)

WRITTEN_FOR = "1.42.0"
SUPERNODE_IDLE_POLL_SECONDS = 0.2  # instead of 3 s: one request to the SuperLink while there is no message
SUPERNODE_LOCAL_WAIT_SECONDS = 0.05  # instead of 0.5 s: a look at the SuperNode's own state
PULL_BACKOFF_SECONDS = (0.05, 2.0)  # first and longest wait for an object still being uploaded
TASK_POLL_SECONDS = 0.05  # how often serve_client_tasks asks its SuperNode for a task (on this machine)
CLIENTAPP_TASK = "flwr-clientapp"  # the task type a SuperNode's ClientApp I/O API hands out


class FlowerVersionError(FedSegError):
    """The installed Flower is not the version this module was written for."""


def check_flower_version() -> None:
    """FlowerVersionError unless the installed flwr is WRITTEN_FOR."""
    installed = version("flwr")
    if installed != WRITTEN_FOR:
        raise FlowerVersionError(f"federation/flower_internals.py was written for Flower {WRITTEN_FOR}, "
                                 f"but Flower {installed} is installed: reinstall fedseg")


class _ShortSleeps:
    """A stand-in for the `time` module whose sleep() is shortened: 3 s idle waits to `idle`, others to
    `local` (every other attribute is time's own)."""

    def __init__(self, idle: float, local: float) -> None:
        self.idle, self.local = idle, local

    def sleep(self, seconds: float) -> None:
        time.sleep(self.idle if seconds >= 1 else min(seconds, self.local))

    def __getattr__(self, name: str) -> object:
        return getattr(time, name)


def shorten_supernode_waits(idle: float = SUPERNODE_IDLE_POLL_SECONDS,
                            local: float = SUPERNODE_LOCAL_WAIT_SECONDS) -> None:
    """Shorten the fixed sleeps of the SuperNode's main loop in this process."""
    check_flower_version()
    from flwr.supernode import start_client_internal

    start_client_internal.time = _ShortSleeps(idle, local)  # type: ignore[attr-defined]


def shorten_object_pulls(initial: float = PULL_BACKOFF_SECONDS[0],
                         cap: float = PULL_BACKOFF_SECONDS[1]) -> None:
    """Retry an object that is not uploaded yet after `initial` seconds, doubling up to `cap`, in this
    process (every caller of Flower's pull_objects leaves the backoff at its default)."""
    check_flower_version()
    from flwr.supercore.inflatable import inflatable_utils

    for pull in (inflatable_utils.pull_objects, inflatable_utils.pull_and_inflate_object_from_tree):
        pull.__kwdefaults__.update(initial_backoff=initial, backoff_cap=cap)


def notice_a_zombie_parent() -> None:
    """Make Flower's parent monitor in this process count a zombie parent as gone (see the module's
    docstring); the monitor looks the check up by name on every pass, so a running one follows."""
    check_flower_version()
    from flwr.supercore import app_utils

    exists = app_utils._pid_exists
    if getattr(exists, "notices_zombies", False):
        return

    def alive(pid: int) -> bool:
        return exists(pid) and not _is_zombie(pid)

    alive.notices_zombies = True  # type: ignore[attr-defined]
    app_utils._pid_exists = alive


def _is_zombie(pid: int) -> bool:
    """Whether the process has ended and waits to be reaped (Linux /proc; False where there is none)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rfind(")") + 2:].split()[:1] == ["Z"]


def run_supernode(arguments: Sequence[str]) -> int:
    """flower-supernode ARGUMENTS in this process, with its waits shortened."""
    shorten_supernode_waits()
    shorten_object_pulls()
    from flwr.supernode.cli.flower_supernode import flower_supernode

    sys.argv = ["flower-supernode", *arguments]
    flower_supernode()
    return 0


# -- serving a SuperNode's ClientApp tasks in one process ------------------------------------------

def serve_client_tasks(runtime_address: str, app: object, secret: bytes, expected_app: str) -> None:
    """Run every ClientApp task of the SuperNode whose ClientApp I/O API is at runtime_address (started
    with `--isolation process` and this `--superexec-auth-secret-file` secret) in this process, one at a
    time, with the ClientApp `app`, until interrupted. A task of another app than expected_app (its FAB id,
    "publisher/name") is answered with an error."""
    shorten_object_pulls()  # a task is handed out before its message's objects are all at the SuperNode
    import httpx
    from flwr.proto.runtime_pb2 import AcquireTaskRequest  # pylint: disable=no-name-in-module

    tasks = _runtime_client(runtime_address, _superexec_auth(secret))
    logger.info("serving the ClientApp tasks of the SuperNode at %s", runtime_address)
    try:
        while True:
            try:
                acquired = tasks.AcquireTask(AcquireTaskRequest(supported_task_types=[CLIENTAPP_TASK]))
            except httpx.HTTPError as error:  # the SuperNode is starting or restarting
                logger.debug("no task from %s: %s", runtime_address, error)
                time.sleep(1.0)
                continue
            if acquired.HasField("task") and acquired.token:
                run_client_task(runtime_address, acquired.token, app, expected_app)
            else:
                time.sleep(TASK_POLL_SECONDS)
    finally:
        tasks.close()


def run_client_task(runtime_address: str, token: str, app: object, expected_app: str) -> None:
    """One task as flwr-clientapp runs it (flwr/supernode/runtime/run_clientapp.py), without installing
    the FAB (the ClientApp is the installed package's) and without exiting afterwards."""
    from flwr.app import Error, Message
    from flwr.common.constant import ErrorCode, SubStatus
    from flwr.supercore.interceptors import RuntimeTokenHttpInterceptor
    from flwr.supernode.runtime.run_clientapp import pull_task_input, push_message, push_task_output

    client = _runtime_client(runtime_address, RuntimeTokenHttpInterceptor(token))
    heartbeat = _start_heartbeat(client)
    message = context = reply = None
    status, details = SubStatus.FAILED, "the ClientApp task failed"
    try:
        message, context, run, _fab = pull_task_input(client)
        logger.info("run %d: a %s message", run.run_id, message.metadata.message_type)
        if run.fab_id != expected_app:
            details = f"this site serves {expected_app} only, not {run.fab_id}"
            reply = Message(Error(code=ErrorCode.LOAD_CLIENT_APP_EXCEPTION, reason=details), reply_to=message)
        else:
            reply = app(message=message, context=context)  # type: ignore[operator]
            status, details = SubStatus.COMPLETED, ""
    except Exception as error:  # what flwr-clientapp does: log it, answer with an error, keep the node
        logger.exception("the ClientApp task failed")
        if message is not None:
            reason = f"{type(error)}:<'{error}'>"
            error_code = ErrorCode.CLIENT_APP_RAISED_EXCEPTION
            reply = Message(Error(code=error_code, reason=reason), reply_to=message)
    finally:
        try:
            if reply is not None and context is not None:
                push_message(client, reply, context)
            push_task_output(client=client, context=context, sub_status=status, details=details)
        except Exception:  # the SuperNode went away: its next task starts afresh
            logger.exception("the reply could not be handed to the SuperNode")
        heartbeat.stop()
        client.close()


def _runtime_client(runtime_address: str, *interceptors: object) -> object:
    """A client of the SuperNode's ClientApp I/O API on this machine (plain HTTP, as Flower's own)."""
    from flwr.supercore.interceptors import RuntimeVersionHttpInterceptor
    from flwr.supercore.runtime import RuntimeHttpClient

    return RuntimeHttpClient.from_server_address(
        server_address=runtime_address, insecure=True, root_certificates=None,
        interceptors=[RuntimeVersionHttpInterceptor(component_name=CLIENTAPP_TASK), *interceptors],
    )


def _superexec_auth(secret: bytes) -> object:
    """Signs AcquireTask with the secret the SuperNode was started with, as flower-superexec does."""
    from flwr.supercore.interceptors import SuperExecAuthHttpInterceptor
    from flwr.supercore.superexec.run_superexec import _SUPEREXEC_AUTH_METHODS

    return SuperExecAuthHttpInterceptor(master_secret=secret, protected_methods=_SUPEREXEC_AUTH_METHODS)


def _start_heartbeat(client: object) -> object:
    """The task's heartbeat, as flwr-clientapp sends it, except that a refused one does not interrupt
    this process (Flower's own sends it SIGINT: a flwr-clientapp ends with its task)."""
    import httpx
    from flwr.proto.runtime_pb2 import SendTaskHeartbeatRequest  # pylint: disable=no-name-in-module
    from flwr.supercore.heartbeat import HeartbeatSender

    def beat() -> bool:
        try:
            return bool(client.SendTaskHeartbeat(SendTaskHeartbeatRequest()).success)  # type: ignore[attr-defined]
        except httpx.HTTPError:
            return False

    sender = HeartbeatSender(beat)
    sender.start()
    return sender
