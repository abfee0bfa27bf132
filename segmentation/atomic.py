"""Atomic file replacement: readers see the old file or the new one, never half of either.

Checkpoints, caches, reports and metrics are all read while jobs run (by the GUI, by a resumed
server), and a crash mid-write must not leave a truncated file behind.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any


@contextmanager
def atomic_open(path: str | Path, mode: str = "w", **open_args: Any) -> Iterator[IO[Any]]:
    """Write through a temporary file beside `path` that replaces it, synced to disk, on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, mode, **open_args) as stream:
            yield stream
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def write_text_atomic(path: str | Path, text: str) -> Path:
    with atomic_open(path, "w", encoding="utf-8", newline="") as stream:
        stream.write(text)
    return Path(path)


def set_aside(path: str | Path, reason: str = "backup") -> Path:
    """Rename `path` to a name beside it that no earlier file has (NAME.REASON-YYYYmmdd-HHMMSS[-N]) and
    return the new path: a file about to be replaced, or a damaged one, is kept, never overwritten."""
    path = Path(path)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    target = path.with_name(f"{path.name}.{reason}-{stamp}")
    number = 1
    while target.exists():
        number += 1
        target = path.with_name(f"{path.name}.{reason}-{stamp}-{number}")
    os.replace(path, target)
    return target
