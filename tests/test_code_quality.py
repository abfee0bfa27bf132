"""The codebase's own rules, checked with every test run: lint clean, layers respected."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _tool(name: str) -> str:
    path = Path(sys.executable).parent / name
    return str(path) if path.exists() else shutil.which(name) or name


def _run(*command: str) -> subprocess.CompletedProcess:
    """Tools print box-drawing characters: decode as UTF-8 whatever the CI locale is."""
    env = {**os.environ, "PYTHONIOENCODING": "utf-8", "LC_ALL": "C.UTF-8"}
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, encoding="utf-8", env=env)


def test_ruff_reports_no_problems():
    result = _run(_tool("ruff"), "check", ".")
    assert result.returncode == 0, result.stdout + result.stderr


def test_import_layers_are_respected():
    """app -> federation -> segmentation; segmentation never imports flwr; Qt only in app.qt."""
    result = _run(_tool("lint-imports"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout
