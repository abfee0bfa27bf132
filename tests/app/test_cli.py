"""The `fedseg` entry point itself: version, help for every subcommand, error mapping."""

import argparse
import subprocess
import sys

import pytest

from app import __version__
from app.cli import build_parser, main


def test_version_is_printed(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.strip() == f"fedseg {__version__}"


def test_every_subcommand_has_help_text():
    parser = build_parser()
    subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    assert subparsers.choices, "no subcommands registered"
    help_by_name = {action.dest: action.help for action in subparsers._choices_actions}
    for name in subparsers.choices:
        assert help_by_name.get(name), f"`fedseg {name}` has no help line"
        assert subparsers.choices[name].format_help().strip()


def test_help_runs_as_a_console_script_without_importing_torch():
    code = "import sys; from app.cli import main\ntry:\n main(['--help'])\nexcept SystemExit: pass\n" \
           "assert 'torch' not in sys.modules, 'torch imported by --help'"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "usage: fedseg" in result.stdout
