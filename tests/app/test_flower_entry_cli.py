"""`fedseg _flower NAME ARGS`: Flower's console scripts run inside the fedseg process (desktop bundles)."""

import pytest

from app.cli import main
from app.commands.flower_entry import flower_entry_points


def test_the_entry_points_are_flowers_own_console_scripts():
    names = set(flower_entry_points())
    assert {"flower-superlink", "flower-supernode", "flower-superexec", "flwr", "flwr-serverapp",
            "flwr-clientapp"} <= names


def test_a_flower_command_runs_with_its_own_arguments(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["_flower", "flwr", "--version"])
    assert exit_info.value.code in (0, None)
    assert capsys.readouterr().out.startswith("Flower version: 1.42")


def test_an_unknown_name_is_a_one_line_error(capsys):
    assert main(["_flower", "flower-nothing", "--x"]) == 2
    error = capsys.readouterr().err
    assert error.startswith("fedseg: error: 'flower-nothing' is not a Flower command; one of: ")
    assert "flwr-clientapp" in error and error.count("\n") == 1
