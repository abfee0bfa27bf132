"""`fedseg start` (what `make run` runs): the workbench on the demo workspace where a window can be shown,
otherwise the headless demo federation, saying so."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping
from typing import Literal

from app.commands.gui import has_desktop

NO_DISPLAY = ("No display found: running the headless demo instead (fedseg demo); "
              "set DISPLAY or run `fedseg gui` on a desktop.")
# Qt platforms that draw nothing on screen: a window opened on them would wait unseen.
INVISIBLE_QT_PLATFORMS = ("offscreen", "minimal")

Launch = Literal["gui", "demo"]


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "start", help="open the workbench on the demo workspace, or run the headless demo without a display",
        description="Open the desktop workbench on the demo workspace (`fedseg gui --demo`) when a display "
                    "is available; otherwise say so and run the headless demo federation (`fedseg demo`, "
                    "report in runs/demo).",
    )
    parser.set_defaults(handler=run)


def choose_launch(environ: Mapping[str, str], platform: str) -> Launch:
    """"gui" when a window would be seen: a desktop session whose Qt platform draws on screen."""
    qt_platform = environ.get("QT_QPA_PLATFORM", "").split(":")[0]
    if has_desktop(environ, platform) and qt_platform not in INVISIBLE_QT_PLATFORMS:
        return "gui"
    return "demo"


def run(args: argparse.Namespace) -> int:
    from app.cli import build_parser

    if choose_launch(os.environ, sys.platform) == "gui":
        command = ["gui", "--demo"]
    else:
        print(NO_DISPLAY, flush=True)
        command = ["demo"]
    chosen = build_parser().parse_args(command)  # the command's own defaults, from its own parser
    return chosen.handler(chosen)
