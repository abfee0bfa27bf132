"""Join a real local federation from the workbench, as a site admin would (e2e, offscreen).

A SuperLink with generated TLS certificates runs in the test process (FederationServer), a second site
runs headless (FederationSite); the Federation page's form is filled in and Join clicked, so the page's
own `fedseg site` child takes part. Two rounds later the page's round table and progress bar and the
Metrics page's per-site Dice show the run; Leave ends the site, and no process the test started is left.
"""

from __future__ import annotations

import os
import signal
import sys
from contextlib import ExitStack
from pathlib import Path

import pytest
from PySide6.QtCore import Qt

sys.path.insert(0, str(Path(__file__).parents[2] / "e2e"))  # the e2e tests' tiny federation helpers

from tiny_federation import flower_family, server_toml, site_datasets, site_toml, wait_for  # noqa: E402

from app.models.federation import SiteRun, SiteState  # noqa: E402
from federation.config import load_server_config, load_site_config  # noqa: E402
from federation.launch import FederationServer, FederationSite  # noqa: E402
from federation.processes import free_port  # noqa: E402
from segmentation.events import read_events  # noqa: E402

pytestmark = pytest.mark.slow

SITES = ("Site A", "Site B")  # Site A joins from the window, Site B runs headless
RUN_TIMEOUT_MS = 240_000  # two rounds of tiny training on two loaded CPU cores, with room to spare
ROUND_TIMEOUT = 120  # the server's [federation] round_timeout


class LocalFederation:
    """The server and the headless site of a tiny two-site federation in `folder`."""

    def __init__(self, folder: Path, processes: ExitStack) -> None:
        self.folder = folder
        self.processes = processes
        self.data = site_datasets(folder / "data", SITES, cases=3, test_fraction=0.34)
        self.port = free_port()
        config = folder / "server.toml"
        config.write_text(server_toml(self.port, rounds=2, round_timeout=ROUND_TIMEOUT))
        self.server = processes.enter_context(FederationServer(load_server_config(config)))
        self.headless: FederationSite | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def ca_certificate(self) -> Path:
        assert self.server.tls is not None
        return self.server.tls.ca_certificate

    def start(self) -> None:
        """Start the SuperLink, then Site B's SuperNode."""
        self.server.start()
        config = self.folder / "Site B.toml"
        config.write_text(site_toml("Site B", self.data["Site B"], self.port, self.ca_certificate))
        self.headless = self.processes.enter_context(FederationSite(load_site_config(config)))
        self.headless.start()


@pytest.fixture
def federation(window, tmp_path, monkeypatch):
    """A started LocalFederation; afterwards the window's site, the server, Site B and whatever Flower
    started for them are stopped, whether the test passed or not."""
    monkeypatch.setenv("FEDSEG_CACHE_DIR", str(tmp_path / "cache"))  # children inherit it
    try:
        with ExitStack() as processes:
            local = LocalFederation(tmp_path, processes)
            local.start()
            yield local
            page = window.pages.get("federation")
            job = page.session.job if page is not None else None
            if job is not None:
                job.kill()
    finally:
        for pid in flower_family(tmp_path):
            os.kill(pid, signal.SIGKILL)


def fill_and_join(qtbot, page, federation: LocalFederation) -> None:
    """Fill the Federation page's form for Site A, as a site admin would, and click Join."""
    page.name.setText("Site A")
    page.modality.setCurrentIndex(page.modality.findData("ct"))
    page.data.set_path(federation.data["Site A"])
    page.address.setText(federation.address)
    page.ca.set_path(federation.ca_certificate)
    page.port.setValue(free_port())
    qtbot.mouseClick(page.join_button, Qt.MouseButton.LeftButton)


def first_step_fractions(events_path: Path) -> dict[int, float]:
    """Per round, the page model's progress after the round's first training step, replaying the site's
    real events (its model counts epochs across rounds; the bar shows the round's own progress)."""
    fractions: dict[int, float] = {}
    run = SiteRun()
    for event in read_events(events_path):
        run.apply_all([event])
        if event["kind"] == "progress" and event["round"] not in fractions:
            fractions[event["round"]] = run.fraction
    return fractions


def test_joining_from_the_window_shows_round_progress_and_every_sites_dice(qtbot, window, federation,
                                                                           error_dialogs, tmp_path):
    page = window.navigate("federation")
    metrics = window.page("metrics").metrics  # the Metrics page's model, which the joined site feeds
    bar_values: list[int] = []
    page.bar.valueChanged.connect(bar_values.append)
    assert page.bar.value() == 0 and page.table.rowCount() == 0

    fill_and_join(qtbot, page, federation)
    assert not error_dialogs(page) and page.session.job is not None and page.session.job.running
    assert page.run.state is SiteState.CONNECTING and page.leave_button.isEnabled()
    assert not page.join_button.isEnabled()
    federation.server.submit()  # its ServerApp waits for both sites while they connect
    qtbot.waitUntil(lambda: page.run.state is not SiteState.CONNECTING and federation.headless.connected(),
                    timeout=60_000)  # the site process's "connection" event says it is in
    assert page.run.state in (SiteState.WAITING, SiteState.TRAINING)  # connected, perhaps training already

    def run_shown() -> bool:
        rows = {row.round: row for row in page.run.rows.values()}
        return (set(rows) == {1, 2} and rows[2].dice_global is not None
                and set(metrics.dice_by_site()) == set(SITES))

    qtbot.waitUntil(run_shown, timeout=RUN_TIMEOUT_MS)  # the window stays live meanwhile
    table = [[page.table.item(row, column).text() for column in range(page.table.columnCount())]
             for row in range(page.table.rowCount())]
    assert [row[0] for row in table] == ["1", "2"]
    assert all(value != "—" for row in table for value in row[1:4])  # loss, Dice before and after
    assert table[1][4] != "—" and 0.0 <= float(table[1][4]) <= 1.0  # the final global model, scored here
    assert bar_values and page.bar.value() == 1000  # moved with the steps, and round 2 is complete
    site_folder = window.workbench.settings.workspace_dir / "federation" / "Site-A"
    assert first_step_fractions(site_folder / "events.jsonl") == {1: 0.5, 2: 0.5}  # 1 epoch of 2 steps

    metrics_page = window.navigate("metrics")
    dice = metrics.dice_by_site()
    assert {site: [number for number, _ in points] for site, points in dice.items()} == {
        site: [1, 2] for site in SITES}  # the history the server shares: each round's training replies
    assert all(0.0 <= value <= 1.0 for points in dice.values() for _, value in points)
    assert {line.get_label() for line in metrics_page.site_axes.get_lines()} == set(SITES)
    assert "2 site(s), 2 round(s)" in metrics_page.caption.text()
    records = metrics_page.table
    assert {records.item(row, 1).text() for row in range(records.rowCount())} == set(SITES)  # site column

    qtbot.mouseClick(page.leave_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: page.run.state is SiteState.LEFT, timeout=60_000)
    assert page.session.job.exit_code == 0
    assert page.join_button.isEnabled() and not page.leave_button.isEnabled()
    assert not error_dialogs(page)
    wait_for(lambda: not flower_family(site_folder), 30, "the window's site processes to end")
    federation.processes.close()  # the server and Site B
    wait_for(lambda: not flower_family(tmp_path), 60, "every process the test started to end")
