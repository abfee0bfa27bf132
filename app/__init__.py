"""FedSeg Workbench: the `fedseg` command line and the desktop app."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("fedseg-workbench")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0+unknown"
