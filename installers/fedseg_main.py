"""The desktop bundle's entry point, shared by all its executables: `fedseg ARGS` exactly as the installed
console script runs it, and flower-superexec, flwr-clientapp... (one executable per Flower console script,
built from this same script) run that Flower command.

In a bundle sys.executable is this `fedseg`, not a Python, yet the GUI starts its jobs as
`sys.executable -m app.cli ARGS` (app/services/child_process.py): that form is accepted too.
"""

import multiprocessing
import sys
from pathlib import Path

from app.cli import main
from app.commands.flower_entry import COMMAND, flower_entry_points


def cli_arguments(executable: str, arguments: list[str]) -> list[str]:
    """The `fedseg` arguments this start stands for: `_flower NAME ARGS` when the executable is named after
    one of Flower's console scripts (NAME or NAME.exe), else ARGS without a leading `-m app.cli`."""
    name = Path(executable).stem
    if name in flower_entry_points():
        return [COMMAND, name, *arguments]
    return arguments[2:] if arguments[:2] == ["-m", "app.cli"] else arguments


if __name__ == "__main__":
    multiprocessing.freeze_support()  # DataLoader workers under spawn (Windows, macOS) re-enter here
    sys.exit(main(cli_arguments(sys.executable, sys.argv[1:])))
