"""`fedseg gui` as a user starts it: the window shows (offscreen), no display is a one-line error,
and the other commands never load Qt."""

import os
import subprocess
import sys

FEDSEG = [sys.executable, "-m", "app.cli"]


def run(arguments, environment):
    return subprocess.run([*FEDSEG, *arguments], capture_output=True, text=True, env=environment, timeout=120)


def test_the_window_shows_and_quits(tmp_path):
    environment = {**os.environ, "QT_QPA_PLATFORM": "offscreen"}
    result = run(["gui", "--quit-when-shown", "--page", "settings", "--settings", str(tmp_path / "s.toml")],
                 environment)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("shown ")


def test_without_a_display_the_command_says_so():
    environment = {key: value for key, value in os.environ.items()
                   if key not in ("DISPLAY", "WAYLAND_DISPLAY", "QT_QPA_PLATFORM")}
    result = run(["gui"], environment)
    assert result.returncode == 2
    assert result.stderr.startswith("fedseg: error: no display") and result.stderr.count("\n") == 1


def test_headless_commands_never_import_qt():
    code = ("import sys\nfrom app.cli import build_parser\nbuild_parser()\n"
            "import app.services.workbench, app.services.training_job, app.services.federation_site\n"
            "assert not [m for m in sys.modules if m.startswith('PySide6')], 'Qt imported'")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
