"""The desktop bundle's entry point: `fedseg ARGS` exactly as the installed console script runs it.

In a bundle sys.executable is this `fedseg`, not a Python, yet the GUI starts its jobs as
`sys.executable -m app.cli ARGS` (app/services/child_process.py): that form is accepted too.
"""

import multiprocessing
import sys

from app.cli import main

if __name__ == "__main__":
    multiprocessing.freeze_support()  # DataLoader workers under spawn (Windows, macOS) re-enter here
    arguments = sys.argv[1:]
    if arguments[:2] == ["-m", "app.cli"]:
        arguments = arguments[2:]
    sys.exit(main(arguments))
