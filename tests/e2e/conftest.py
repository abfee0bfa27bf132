"""The `launched` fixture: fedseg commands started as children and always cleaned up."""

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from tiny_federation import flower_family

FEDSEG = str(Path(sys.executable).parent / "fedseg")


@pytest.fixture
def launched(tmp_path):
    """Start commands as children; afterwards stop whatever is left of them and of what they started."""
    children: list[subprocess.Popen] = []

    def launch(name: str, *arguments: str) -> subprocess.Popen:
        log = open(tmp_path / f"{name}.out", "w")  # noqa: SIM115 - closed with the child below
        environment = {**os.environ, "FEDSEG_CACHE_DIR": str(tmp_path / "cache")}
        child = subprocess.Popen([FEDSEG, *arguments], stdout=log, stderr=subprocess.STDOUT, env=environment,
                                 cwd=tmp_path, start_new_session=True)
        child.log = log
        children.append(child)
        return child

    try:
        yield launch
    finally:
        for child in children:
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
        for child in children:
            try:
                child.wait(30)
            except subprocess.TimeoutExpired:
                child.kill()
            child.log.close()
        for pid in flower_family(tmp_path):  # Flower's processes, if a command could not stop them
            os.kill(pid, signal.SIGKILL)
