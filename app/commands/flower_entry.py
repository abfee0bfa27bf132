"""`fedseg _flower NAME ARGS...` (internal): run one of Flower's console scripts inside this process.

A desktop bundle has no Python console scripts: Flower's are functions in the bundled flwr package.
The bundle's executables named after them (flwr-clientapp, flower-superexec...) run this command
(installers/fedseg_main.py), which finds NAME in flwr's own entry points (its dist-info's
console_scripts) and calls that function with ARGS. flower-supernode runs with its fixed waits shortened
(federation.flower_internals), as `fedseg site` starts it.
"""

from __future__ import annotations

import argparse
import sys
from importlib.metadata import EntryPoint, PackageNotFoundError, distribution

COMMAND = "_flower"


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        COMMAND, help="(internal) run one of Flower's commands in this process; desktop bundles use it",
        description="Run one of Flower's console scripts (flower-superlink, flwr-clientapp...) in this "
                    "process: a desktop bundle has no separate executables for them.",
    )
    parser.add_argument("name", help="a Flower console script, e.g. flwr-clientapp")
    parser.add_argument("arguments", nargs=argparse.REMAINDER, help="its arguments")
    parser.set_defaults(handler=run)


def flower_entry_points() -> dict[str, EntryPoint]:
    """Flower's console scripts by name, as its installed metadata lists them."""
    from segmentation.errors import ConfigError

    try:
        entry_points = distribution("flwr").entry_points
    except PackageNotFoundError:
        raise ConfigError("Flower (flwr) is not installed with its metadata; reinstall fedseg") from None
    return {entry.name: entry for entry in entry_points if entry.group == "console_scripts"}


def run(args: argparse.Namespace) -> int:
    from segmentation.errors import ConfigError

    entry_points = flower_entry_points()
    if args.name not in entry_points:
        raise ConfigError(f"{args.name!r} is not a Flower command; one of: {', '.join(sorted(entry_points))}")
    if args.name == "flower-supernode":
        from federation.flower_internals import run_supernode

        return run_supernode(args.arguments)
    sys.argv = [args.name, *args.arguments]  # what the console script parses, as if started by name
    return int(entry_points[args.name].load()() or 0)
