"""The `fedseg` command line: finds the subcommands in app.commands and runs the chosen one.

Errors the user can fix (FedSegError) print one line and exit with status 2; Ctrl-C exits 130.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys

import app.commands
from app import __version__

EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fedseg",
        description="FedSeg Workbench: federated medical-image segmentation across modalities.",
    )
    parser.add_argument("--version", action="version", version=f"fedseg {__version__}")
    subparsers = parser.add_subparsers(title="commands", metavar="COMMAND", required=True)
    for module_info in sorted(pkgutil.iter_modules(app.commands.__path__), key=lambda m: m.name):
        module = importlib.import_module(f"app.commands.{module_info.name}")
        module.register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from segmentation.errors import FedSegError

    try:
        return int(args.handler(args) or 0)
    except FedSegError as error:
        print(f"fedseg: error: {error}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("fedseg: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # output piped into e.g. `head`, which closed early: not an error
        sys.stdout = None  # type: ignore[assignment]  # keeps the interpreter from flushing again
        return 0


if __name__ == "__main__":
    sys.exit(main())
