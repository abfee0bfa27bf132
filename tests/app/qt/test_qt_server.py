"""The Server page as a federation operator uses it: the form writes a server.toml the server accepts,
shows every key's fingerprint, asks before replacing a file; closing the window while the server runs
asks Stop / Keep / Cancel; and Start runs a real `fedseg server` (TLS made for this computer, a free
port on 127.0.0.1) that the page reports up until Stop ends it and every process it started."""

import os
import signal
import sys
from dataclasses import replace
from pathlib import Path

import pytest
from PySide6.QtWidgets import QFileDialog

from app.models.server import ServerState
from app.qt.keys_dialog import REPLACE
from app.qt.pages.server import KEEP, STOP
from app.services.child_process import EXIT_INTERRUPTED
from app.services.server_operator import ServerForm
from federation.config import ModelSettings, load_server_config
from federation.he.context import write_he_keys
from federation.keys import generate_node_keys
from federation.processes import free_port

sys.path.insert(0, str(Path(__file__).parents[2] / "e2e"))  # the e2e tests' process helpers

from tiny_federation import flower_family, wait_for  # noqa: E402

START_TIMEOUT_MS = 180_000  # the ServerApp imports torch and MONAI on two loaded cores


@pytest.fixture
def page(window):
    return window.navigate("server")


def test_the_form_writes_a_server_toml_the_server_accepts(qtbot, page, tmp_path, monkeypatch, error_dialogs):
    sites = [generate_node_keys(tmp_path / "keys", name) for name in ("site-a", "site-b")]
    he = write_he_keys(tmp_path / "he")
    monkeypatch.setattr(QFileDialog, "getOpenFileNames",
                        lambda *args: ([str(pair.public_key) for pair in sites], ""))
    page.fields.add_key.click()
    page.fields.add_site_key(str(sites[0].public_key))  # listed once
    shown = [page.fields.keys.item(row).text() for row in range(page.fields.keys.count())]
    assert shown == [f"site-a.pub    {sites[0].fingerprint}", f"site-b.pub    {sites[1].fingerprint}"]
    page.fields.he.set_path(he.secret_context)
    assert page.fields.he_fingerprint.text().startswith("not usable:") and "secret key" in \
        page.fields.he_fingerprint.text()
    page.fields.he.set_path(he.public_context)
    assert page.fields.he_fingerprint.text() == he.fingerprint
    page.fields.rounds.setValue(4)
    page.fields.personalise_epochs.setValue(6)
    page.fields.strategy.setCurrentIndex(page.fields.strategy.findData("fedprox"))
    page.fields.proximal_mu.setValue(0.05)
    page.fields.labels.setText("background, liver")
    page.fields.patch_size.setText("64, 96")

    target = tmp_path / "operator" / "server.toml"
    monkeypatch.setattr(QFileDialog, "getSaveFileName", lambda *args: (str(target), ""))
    page.save_as_button.click()
    qtbot.waitUntil(lambda: page.path == target, timeout=60_000)
    config = load_server_config(target)
    assert config.site_public_keys == tuple(pair.public_key for pair in sites)
    assert (config.he.enabled, config.he.fingerprint) == (True, he.fingerprint)
    assert (config.federation.rounds, config.federation.strategy, config.federation.proximal_mu) == (
        4, "fedprox", 0.05)
    assert (config.model.labels, config.model.patch_size) == (("background", "liver"), (64, 96))
    assert config.federation.personalise_epochs == 6
    assert config.run_dir == target.parent / "run" and config.tls.generate
    assert not error_dialogs(page)

    page.fields.labels.setText("background")  # one label: the server's loader says why, nothing is written
    before = target.read_text()
    page.save_button.click()
    qtbot.waitUntil(lambda: bool(error_dialogs(page)), timeout=60_000)
    assert "[model] labels must be a list of at least 2" in error_dialogs(page)[-1].text()
    assert target.read_text() == before and not list(target.parent.glob("*.backup-*"))


def test_saving_over_a_file_it_did_not_write_asks_and_keeps_the_old_one(qtbot, page, questions):
    page.path.parent.mkdir(parents=True, exist_ok=True)
    page.path.write_text("# the operator's notes\n")
    page.fields.set_form(replace(ServerForm(), model=ModelSettings(labels=("background", "liver"))))
    questions.answers = ["Cancel"]
    page.save_button.click()
    assert questions.asked and "already exists" in questions.asked[0] and not page.own_file
    assert page.path.read_text() == "# the operator's notes\n"
    questions.answers = [REPLACE]
    page.save_button.click()
    qtbot.waitUntil(lambda: page.own_file, timeout=60_000)
    assert load_server_config(page.path).model.labels == ("background", "liver")
    backups = list(page.path.parent.glob("server.toml.backup-*"))
    assert [path.read_text() for path in backups] == ["# the operator's notes\n"]


class RunningServer:
    """Stands in for a started `fedseg server` child: running until asked to stop."""

    def __init__(self) -> None:
        self.running = True
        self.stop_requested = False

    def request_stop(self) -> None:
        self.stop_requested = True

    def kill(self) -> None:
        self.running = False


@pytest.mark.parametrize(("answer", "closed", "stopped"),
                         [("Cancel", False, False), (KEEP, True, False), (STOP, True, True)])
def test_closing_while_the_server_runs_asks(qtbot, window, page, questions, answer, closed, stopped):
    job = page.operator.job = RunningServer()
    questions.answers = [answer]
    window.close()
    assert len(questions.asked) == 1 and "still running" in questions.asked[0]
    assert window.isVisible() is not closed
    assert job.stop_requested is stopped
    job.running = False  # so that closing the window after the test asks nothing


def test_the_window_closes_without_asking_when_no_server_runs(qtbot, window, page, questions):
    window.close()
    assert questions.asked == [] and not window.isVisible()


@pytest.fixture
def no_process_left(tmp_path):
    """Whatever the test started in tmp_path (the server, its SuperLink and ServerApp) is ended after it."""
    yield
    for pid in flower_family(tmp_path):
        os.kill(pid, signal.SIGKILL)


@pytest.mark.slow
def test_start_runs_the_server_the_page_reports_it_and_stop_ends_every_process(
        qtbot, window, page, tmp_path, no_process_left, error_dialogs):
    fields = page.fields
    fields.host.setText("127.0.0.1")
    fields.port.setValue(free_port())
    fields.min_sites.setValue(1)
    fields.rounds.setValue(1)
    fields.labels.setText("background, liver")
    fields.channels.setText("8, 16")
    fields.generate.click()  # TLS for this computer, made now into RUN/tls
    run_dir = page.path.parent / "run"
    assert Path(fields.ca.path) == run_dir / "tls" / "ca.crt" and (run_dir / "tls" / "server.key").is_file()

    page.start_button.click()
    qtbot.waitUntil(lambda: page.operator.running, timeout=60_000)
    try:
        assert page.operator.job.arguments == ["server", "--config", str(page.path)]  # new run: no --resume
        qtbot.waitUntil(lambda: page.operator.run.state is ServerState.WAITING, timeout=START_TIMEOUT_MS)
        assert page.badge.text() == "Waiting for sites" and page.stop_button.isEnabled()
        assert not page.start_button.isEnabled() and not page.fields.isEnabled()
        page.check_online()  # the SuperLink answers over TLS: no site is online yet
        qtbot.waitUntil(lambda: page.tile_online.value.text() == "0", timeout=60_000)
        assert "starting the SuperLink" in page.log.toPlainText()

        page.stop_button.click()
        assert page.operator.run.state is ServerState.STOPPING
        qtbot.waitUntil(lambda: page.operator.run.state is ServerState.STOPPED, timeout=60_000)
        assert page.operator.job.exit_code == EXIT_INTERRUPTED and not error_dialogs(page)
        assert page.start_button.isEnabled() and page.tile_online.value.text() == "—"
    finally:
        page.operator.job.kill()  # before the window closes: a running server would make it ask
    wait_for(lambda: not flower_family(tmp_path), 60, "every process the server started to end")


def test_the_page_shows_what_each_round_cost(page):
    page.operator.run.apply_all([
        {"kind": "started", "rounds": 2, "round": 0},
        {"kind": "checkpoint", "round": 1, "summary": {
            "round": 1, "wall_s": 6.0, "work_s": 4.5, "overhead_s": 1.5, "sites": [
                {"site": "CT Hospital", "status": "accepted", "work_s": 4.5,
                 "array_bytes_sent": 2048, "array_bytes_received": 1024}]}},
    ])
    table = page.costs
    header = [table.horizontalHeaderItem(column).text() for column in range(table.columnCount())]
    assert header == ["round", "wall s", "slowest site s", "overhead s", "CT Hospital (KiB in/out)"]
    assert [table.item(0, column).text() for column in range(table.columnCount())] == [
        "1", "6.0", "4.5", "1.5", "accepted 1.0/2.0"]
