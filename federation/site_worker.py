"""A site's worker process, which keeps PyTorch, MONAI and the engine loaded between rounds.

Flower 1.42 starts a fresh ClientApp process for every message, and importing PyTorch and MONAI there
costs 3 to 5 s of every round (docs/federation.md). So `fedseg site` starts this worker beside its
SuperNode, and the ClientApp only forwards each message's records to it over an authenticated
connection on 127.0.0.1 (multiprocessing.connection: HMAC challenge with a key made per start, which
reaches the ClientApp through the SuperNode's node config). What goes back and forth never leaves the
site's machine; the reply to the server is built from it as before.

This module stays light (no PyTorch): the ClientApp process imports it.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections.abc import Callable
from multiprocessing import AuthenticationError
from multiprocessing.connection import Client, Listener
from typing import Any

from flwr.app import RecordDict

from federation.site_protocol import Handler, SiteAnswer

logger = logging.getLogger(__name__)

PARENT_POLL_SECONDS = 0.5


def ask_worker(address: str, key: str, kind: str, content: RecordDict, node_config: dict[str, Any],
               state: RecordDict) -> SiteAnswer:
    """Have the worker at host:port answer a train, evaluate or query message; OSError, EOFError or
    multiprocessing's AuthenticationError when it cannot."""
    host, _, port = address.rpartition(":")
    with Client((host, int(port)), authkey=bytes.fromhex(key)) as connection:
        connection.send((kind, content, node_config, state))
        return SiteAnswer(*connection.recv())


def serve(port: int, key: bytes, load_handler: Callable[[], Handler], parent_pid: int | None = None,
          host: str = "127.0.0.1") -> None:
    """Answer messages one at a time with the handler `load_handler` gives (the site's work: it loads
    the engine, once). With parent_pid, a KeyboardInterrupt ends it once that process (`fedseg site`) is
    gone: a site killed with SIGKILL cannot stop its worker itself."""
    if parent_pid is not None:
        watch_parent(parent_pid)
    with Listener((host, port), authkey=key) as listener:
        # Listening first: a ClientApp that connects meanwhile waits for the engine in the backlog.
        answer = load_handler()

        logger.info("site worker listening on %s:%d", host, port)
        while True:
            try:
                connection = listener.accept()
            except (OSError, EOFError, AuthenticationError) as error:  # a port probe, or a wrong key
                logger.info("a connection without the key was closed (%s)", type(error).__name__)
                continue
            with connection:
                try:
                    kind, content, node_config, state = connection.recv()
                    connection.send(tuple(answer(kind, content, node_config, state)))
                except (OSError, EOFError):
                    logger.warning("the ClientApp went away before its answer")


def watch_parent(parent_pid: int) -> None:
    """Interrupt the main thread once `parent_pid` is no longer this process's parent (it ended, even by
    SIGKILL, and the worker was handed to another). The SIGINT goes to the main thread itself, so the
    accept() it is blocked in returns; a signal raised from this thread (Flower's monitor does that) only
    takes effect at the main thread's next bytecode, i.e. never while no ClientApp connects. Windows keeps
    no parent link and cannot signal a thread: there Flower's own monitor watches the process."""
    if not hasattr(signal, "pthread_kill"):
        from flwr.supercore.app_utils import start_parent_process_monitor

        start_parent_process_monitor(parent_pid)
        return

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(PARENT_POLL_SECONDS)
        logger.info("the site process %d is gone; the worker stops", parent_pid)
        signal.pthread_kill(threading.main_thread().ident, signal.SIGINT)  # type: ignore[arg-type]

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()
