"""`fedseg _site-worker --runtime-address HOST:PORT --secret-file FILE [--parent-pid PID]` (internal): a
site's worker process, which runs the ClientApp tasks of the site's SuperNode (federation.site_worker).
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

COMMAND = "_site-worker"


def register(subparsers: argparse._SubParsersAction) -> None:
    from federation.site_protocol import CLIENT_APP

    parser = subparsers.add_parser(
        COMMAND, help="(internal) a federation site's worker; `fedseg site` starts it",
        description="Run the ClientApp tasks of the SuperNode whose ClientApp I/O API is at "
                    "--runtime-address, keeping the segmentation engine loaded between rounds. "
                    "`fedseg site` starts it.",
    )
    parser.add_argument("--runtime-address", required=True,
                        help="the SuperNode's ClientApp I/O API, HOST:PORT")
    parser.add_argument("--secret-file", type=Path, required=True,
                        help="the secret the SuperNode was started with (--superexec-auth-secret-file)")
    parser.add_argument("--parent-pid", type=int, help="exit when this process is gone")
    parser.add_argument("--client-app", default=CLIENT_APP,
                        help=f"MODULE:NAME of the ClientApp (default {CLIENT_APP})")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from federation.site_worker import serve

    # Its log (next to the SuperNode's) says when each task came, and why one failed.
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        serve(args.runtime_address, args.secret_file, args.client_app, args.parent_pid)
    except KeyboardInterrupt:  # asked to stop, or its parent is gone
        pass
    return 0
