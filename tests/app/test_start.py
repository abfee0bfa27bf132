"""`fedseg start`: the workbench on the demo workspace where a window can be seen, the headless demo
(announced in one line) where it cannot."""

from pathlib import Path

import pytest

from app.cli import main
from app.commands.start import NO_DISPLAY, choose_launch


@pytest.mark.parametrize(("environ", "platform", "expected"), [
    ({}, "linux", "demo"),
    ({"DISPLAY": ""}, "linux", "demo"),  # `DISPLAY= make run`
    ({"DISPLAY": ":0"}, "linux", "gui"),
    ({"WAYLAND_DISPLAY": "wayland-0"}, "linux", "gui"),
    ({"DISPLAY": ":0", "QT_QPA_PLATFORM": "xcb"}, "linux", "gui"),
    ({"DISPLAY": ":0", "QT_QPA_PLATFORM": "offscreen"}, "linux", "demo"),
    ({"DISPLAY": ":0", "QT_QPA_PLATFORM": "minimal:enable_fonts"}, "linux", "demo"),
    ({"QT_QPA_PLATFORM": "xcb"}, "linux", "demo"),
    ({}, "darwin", "gui"),
    ({}, "win32", "gui"),
    ({"QT_QPA_PLATFORM": "offscreen"}, "win32", "demo"),
])
def test_the_launch_follows_the_display(environ, platform, expected):
    assert choose_launch(environ, platform) == expected


@pytest.fixture
def handlers(monkeypatch):
    """The gui and demo handlers replaced by recorders: {"gui": [args...], "demo": [args...]}."""
    calls = {"gui": [], "demo": []}
    for name in calls:
        monkeypatch.setattr(f"app.commands.{name}.run", lambda args, name=name: calls[name].append(args) or 7)
    return calls


def test_without_a_display_it_says_so_and_runs_the_demo_with_its_defaults(monkeypatch, capsys, handlers):
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    monkeypatch.setenv("QT_QPA_PLATFORM", "offscreen")
    assert main(["start"]) == 7
    assert capsys.readouterr().out == NO_DISPLAY + "\n"
    assert handlers["gui"] == [] and len(handlers["demo"]) == 1
    demo = handlers["demo"][0]
    assert (demo.out, demo.rounds, demo.local_epochs) == (Path("runs/demo"), None, None)
    assert not demo.baselines


def test_with_a_display_it_opens_the_workbench_on_the_demo_workspace(monkeypatch, capsys, handlers):
    monkeypatch.setenv("DISPLAY", ":99")
    monkeypatch.delenv("QT_QPA_PLATFORM", raising=False)
    assert main(["start"]) == 7
    assert capsys.readouterr().out == ""
    assert handlers["demo"] == [] and len(handlers["gui"]) == 1
    gui = handlers["gui"][0]
    assert gui.demo and gui.path is None and gui.page is None and not gui.quit_when_shown
