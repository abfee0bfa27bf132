"""`fedseg gui`: the desktop workbench (viewer, dataset, training, federation, server, metrics, inference);
`fedseg gui --server` opens it on the federation operator's Server page."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping
from pathlib import Path

# Literal so that `fedseg --help` needs no Qt; a test checks it equals app.qt.main_window.PAGE_NAMES.
PAGE_NAMES = ("home", "viewer", "dataset", "training", "federation", "server", "metrics", "inference",
              "settings")


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "gui", help="open the desktop workbench",
        description="Open the FedSeg desktop workbench, optionally on a study or the demo workspace.",
    )
    parser.add_argument("path", nargs="?", type=Path, help="a study to open: a file or a DICOM folder")
    parser.add_argument("--labels", type=Path, help="a label map to overlay on PATH")
    parser.add_argument("--demo", action="store_true", help="open the demo workspace (made on first use)")
    first = parser.add_mutually_exclusive_group()
    first.add_argument("--page", choices=PAGE_NAMES, help="the page to show first")
    first.add_argument("--server", dest="page", action="store_const", const="server",
                       help="open on the Server page: the federation operator's view (same as --page server)")
    parser.add_argument("--settings", type=Path, metavar="TOML",
                        help="settings file (default: settings.toml in the user's config folder)")
    parser.add_argument("--quit-when-shown", action="store_true",
                        help="print the time the window was first drawn and quit (smoke tests, benchmarks)")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from segmentation.errors import ConfigError

    if args.labels is not None and args.path is None:
        raise ConfigError("--labels needs a study to overlay: fedseg gui STUDY --labels LABELS")
    if not has_display():
        raise ConfigError("no display to show the workbench on; run it on a desktop, set QT_QPA_PLATFORM="
                          "offscreen to render without one, or use the headless `fedseg` commands")
    from app.qt.application import run_gui

    return run_gui(args.path, args.labels, args.demo, args.page, args.settings, args.quit_when_shown)


def has_display() -> bool:
    """Whether Qt can open a window: a desktop session, or an explicit platform such as offscreen."""
    return bool(os.environ.get("QT_QPA_PLATFORM")) or has_desktop(os.environ, sys.platform)


def has_desktop(environ: Mapping[str, str], platform: str) -> bool:
    """A desktop session: always on Windows and macOS; on Linux and the BSDs an X11 or Wayland display."""
    return platform in ("win32", "darwin") or bool(environ.get("DISPLAY") or environ.get("WAYLAND_DISPLAY"))
