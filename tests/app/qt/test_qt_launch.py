"""`fedseg gui` as a user starts it: the window shows (offscreen), no display is a one-line error,
and the other commands, `fedseg start` without a display included, never load Qt."""

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


def test_the_server_option_opens_the_operators_page(tmp_path):
    environment = {**os.environ, "QT_QPA_PLATFORM": "offscreen"}
    settings = str(tmp_path / "s.toml")
    result = run(["gui", "--server", "--quit-when-shown", "--settings", settings], environment)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split()[::2] == ["shown", "server"]  # "shown TIME PAGE"
    both = run(["gui", "--server", "--page", "viewer"], environment)
    assert both.returncode == 2 and "not allowed with argument" in both.stderr


def without_display(*names):
    """This process's environment less the display variables and `names`."""
    dropped = ("DISPLAY", "WAYLAND_DISPLAY", *names)
    return {key: value for key, value in os.environ.items() if key not in dropped}


def test_without_a_display_the_command_says_so():
    result = run(["gui"], without_display("QT_QPA_PLATFORM"))
    assert result.returncode == 2
    assert result.stderr.startswith("fedseg: error: no display") and result.stderr.count("\n") == 1


def test_headless_commands_never_import_qt():
    code = ("import sys\nfrom app.cli import build_parser\nbuild_parser()\n"
            "import app.services.workbench, app.services.training_job, app.services.federation_site\n"
            "assert not [m for m in sys.modules if m.startswith('PySide6')], 'Qt imported'")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_start_without_a_display_runs_the_demo_without_importing_qt():
    code = ("import sys\nimport app.commands.demo as demo\nruns = []\n"
            "demo.run = lambda args: runs.append(args.out) or 0\nfrom app.cli import main\n"
            "assert main(['start']) == 0 and len(runs) == 1, runs\n"
            "assert not [m for m in sys.modules if m.startswith('PySide6')], 'Qt imported'")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            env={**without_display(), "QT_QPA_PLATFORM": "offscreen"})
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("No display found")


def test_the_pages_load_without_torch():
    """The training page reads plans (segmentation.plan, segmentation.settings) without the engine: launch
    stays light, torch loads only when a page's action needs it."""
    code = ("import sys\nimport app.qt.main_window, app.qt.pages.training, app.qt.pages.federation\n"
            "import app.qt.pages.metrics, app.qt.pages.inference, app.services.training_job\n"
            "heavy = [m for m in ('torch', 'monai', 'flwr') if m in sys.modules]\n"
            "assert not heavy, f'{heavy} imported'")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            env={**os.environ, "QT_QPA_PLATFORM": "offscreen"})
    assert result.returncode == 0, result.stderr
