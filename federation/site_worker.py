"""A site's worker process: it runs every ClientApp task of the site's SuperNode, with PyTorch, MONAI and
the engine loaded once.

Stock Flower starts a fresh flwr-clientapp process for every message, and Python, flwr's and the model
code's imports cost seconds of every round (docs/federation.md). `fedseg site` starts its SuperNode with
Flower's `--isolation process` instead, and this worker beside it takes the SuperNode's tasks over its
ClientApp I/O API on 127.0.0.1 (signed with a secret the two share; federation.flower_internals) and runs
the installed ClientApp, federation.client_app, on each. The site so never runs code the server sends.
"""

from __future__ import annotations

import importlib
import logging
import os
import signal
import threading
import time
from pathlib import Path

from federation.site_protocol import CLIENT_APP, FLOWER_APP_ID
from segmentation.errors import ConfigError

logger = logging.getLogger(__name__)

PARENT_POLL_SECONDS = 0.5


def serve(runtime_address: str, secret_file: Path, client_app: str = CLIENT_APP,
          parent_pid: int | None = None) -> None:
    """Run the SuperNode's ClientApp tasks with client_app (MODULE:NAME) until interrupted. With
    parent_pid, a KeyboardInterrupt ends it once that process (`fedseg site`) is gone: a site killed with
    SIGKILL cannot stop its worker itself."""
    from federation.flower_internals import serve_client_tasks

    if parent_pid is not None:
        watch_parent(parent_pid)
    try:
        secret = Path(secret_file).read_bytes()
    except OSError as error:
        raise ConfigError(f"the site worker cannot read its secret {secret_file}: {error.strerror}") from None
    serve_client_tasks(runtime_address, load_client_app(client_app), secret, FLOWER_APP_ID)


def load_client_app(reference: str) -> object:
    """The ClientApp MODULE:NAME names, with the site's work (PyTorch, MONAI, the engine) loaded first, so
    the first round does not wait for it."""
    importlib.import_module("federation.site_work")
    module, _, name = reference.partition(":")
    return getattr(importlib.import_module(module), name)


def watch_parent(parent_pid: int) -> None:
    """Interrupt the main thread once `parent_pid` is no longer this process's parent (it ended, even by
    SIGKILL, and the worker was handed to another). The SIGINT goes to the main thread itself, so a wait it
    is blocked in returns. Windows keeps no parent link and cannot signal a thread: there Flower's own
    monitor watches the process."""
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
