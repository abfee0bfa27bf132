"""`fedseg _site-worker --port PORT [--parent-pid PID]` (internal): a site's worker process.

`fedseg site` starts it beside the SuperNode (federation.site_worker explains why); the connection key
comes in the environment variable FEDSEG_SITE_WORKER_KEY (hex), never on the command line.
"""

from __future__ import annotations

import argparse
import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from federation.site_protocol import Handler

COMMAND = "_site-worker"


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        COMMAND, help="(internal) a federation site's worker; `fedseg site` starts it",
        description="Answer the site's ClientApp messages on 127.0.0.1:PORT, keeping the segmentation "
                    "engine loaded between rounds. `fedseg site` starts it; the key comes in "
                    "FEDSEG_SITE_WORKER_KEY.",
    )
    parser.add_argument("--port", type=int, required=True, help="the port to listen on, on 127.0.0.1")
    parser.add_argument("--parent-pid", type=int, help="exit when this process is gone")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from federation.site_protocol import KEY_ENVIRONMENT
    from federation.site_worker import serve
    from segmentation.errors import ConfigError

    try:
        key = bytes.fromhex(os.environ.get(KEY_ENVIRONMENT, ""))
    except ValueError:
        key = b""
    if not key:
        raise ConfigError(f"{KEY_ENVIRONMENT} must hold the connection key in hex")
    try:
        serve(args.port, key, _site_work, args.parent_pid)
    except KeyboardInterrupt:  # asked to stop, or its parent is gone
        pass
    return 0


def _site_work() -> Handler:
    """The site's work (federation.site_work loads PyTorch and MONAI): what the worker answers with."""
    from federation.site_work import answer

    return answer
