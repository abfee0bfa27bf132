"""The bundle's entry point: an executable named after a Flower command runs that command, `fedseg` the CLI.

installers/ is not a package (PyInstaller runs fedseg_main.py as a script), so it is loaded from its file.
"""

import importlib.util
from pathlib import Path

import pytest

from app.cli import main

MAIN = Path(__file__).resolve().parents[2] / "installers" / "fedseg_main.py"


@pytest.fixture(scope="module")
def cli_arguments():
    spec = importlib.util.spec_from_file_location("fedseg_main", MAIN)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.cli_arguments


@pytest.mark.parametrize("executable", ["/opt/fedseg/flwr-clientapp", "/opt/fedseg/flwr-clientapp.exe"])
def test_a_flower_named_executable_runs_that_flower_command(cli_arguments, executable):
    assert cli_arguments(executable, ["--insecure", "--token", "7"]) == [
        "_flower", "flwr-clientapp", "--insecure", "--token", "7"]


def test_fedseg_runs_its_own_commands_also_in_the_python_m_form(cli_arguments):
    assert cli_arguments("/opt/fedseg/fedseg", ["train", "--epochs", "1"]) == ["train", "--epochs", "1"]
    assert cli_arguments("/opt/fedseg/fedseg", ["-m", "app.cli", "demo"]) == ["demo"]
    assert cli_arguments("/opt/fedseg/fedseg", ["flwr", "--version"]) == ["flwr", "--version"]


def test_the_flower_named_form_reaches_flowers_own_command(cli_arguments, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(cli_arguments("/opt/fedseg/flwr", ["--version"]))
    assert exit_info.value.code in (0, None)
    assert capsys.readouterr().out.startswith("Flower version: 1.42")
