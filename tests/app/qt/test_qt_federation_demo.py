"""Start demo on the Federation page (offscreen): the background `fedseg demo --join-site ct` is replaced by
a child that only announces the CT site's site.toml (written by the demo's own code, with TLS and an HE key)
and waits; the page fills its form from it and joins through Join's code path (a real `fedseg site`, which
keeps retrying the absent server); Stop demo leaves, then stops the demo, with no error dialog."""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import pytest
from PySide6.QtCore import Qt

sys.path.insert(0, str(Path(__file__).parents[2] / "e2e"))  # the e2e tests' process helpers

from tiny_federation import flower_family, wait_for  # noqa: E402

from app.models.federation import SiteState  # noqa: E402
from app.services.demo import DemoFederationJob  # noqa: E402
from federation.certificates import default_names, generate_tls_files  # noqa: E402
from federation.config import load_site_config  # noqa: E402
from federation.demo.data import site_data_spec, site_dataset  # noqa: E402
from federation.demo.federated import announce_joining_site, demo_he_keys, site_toml  # noqa: E402
from federation.demo.settings import DemoSettings  # noqa: E402
from federation.processes import free_port  # noqa: E402

pytestmark = pytest.mark.slow  # a real `fedseg site` child and its SuperNode

TINY = DemoSettings(sites=("ct",), train_cases=2, test_cases=1, volume_size=16)
# Stands in for `fedseg demo`: waits, and ends as an interrupted command does on SIGINT.
WAIT_FOR_SIGINT = ("import signal, sys, time; signal.signal(signal.SIGINT, lambda *_: sys.exit(130)); "
                   "time.sleep(300)")


class AnnouncingDemo(DemoFederationJob):
    """The demo child replaced by a waiting one; start() announces the CT site as the demo would."""

    @property
    def command(self) -> list[str]:
        return [sys.executable, "-c", WAIT_FOR_SIGINT]

    def start(self) -> None:
        super().start()
        folder = self.federation_dir
        dataset = site_dataset(self.out / "data" / "ct", site_data_spec(TINY, "ct"))
        tls = generate_tls_files(folder / "tls", default_names("127.0.0.1"))
        path = folder / "ct-site.toml"
        he = demo_he_keys(folder)
        path.write_text(site_toml("CT Hospital", dataset, free_port(), tls.ca_certificate, he))
        announce_joining_site(folder, path, "CT Hospital", self.join_site)


@pytest.fixture
def demo_page(window, monkeypatch, tmp_path):
    """The Federation page with the announcing demo; afterwards no process the test started is left."""
    monkeypatch.setenv("FEDSEG_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr("app.services.site_session.DemoFederationJob", AnnouncingDemo)
    page = window.navigate("federation")
    try:
        yield page
    finally:
        for job in (page.session.job, page.demo.job):
            if job is not None:
                job.kill()
        for pid in flower_family(tmp_path):
            os.kill(pid, signal.SIGKILL)


def test_start_demo_joins_as_the_announced_site_and_stop_demo_leaves_it(qtbot, window, demo_page,
                                                                        error_dialogs, tmp_path):
    page = demo_page
    qtbot.mouseClick(page.demo_button, Qt.MouseButton.LeftButton)
    demo = page.demo.job
    assert demo.arguments[-2:] == ["--join-site", "ct"]
    assert page.demo_button.text().strip() == "Stop demo"
    qtbot.waitUntil(lambda: page.session.job is not None, timeout=60_000)
    announced = load_site_config(demo.joining_site_config())
    assert (page.name.text(), page.modality.currentData()) == ("CT Hospital", "ct")
    assert (page.data.path, page.address.text()) == (announced.data_dir, announced.server_address)
    assert (page.ca.path, page.port.value()) == (announced.ca_certificate, announced.clientappio_port)
    assert page.he.path == announced.he_secret_context
    fingerprint = announced.he_fingerprint
    qtbot.waitUntil(lambda: page.fingerprint.text() == fingerprint, timeout=30_000)

    joined = load_site_config(page.session.job.config.source)  # what Join wrote into this workspace
    assert joined.source.parent == window.workbench.settings.workspace_dir / "federation" / "CT-Hospital"
    assert (joined.name, joined.modality) == ("CT Hospital", "ct")
    assert joined.server_address == announced.server_address
    assert (joined.he_secret_context, joined.ca_certificate) == (announced.he_secret_context,
                                                                 announced.ca_certificate)
    assert page.session.job.running and page.run.state is SiteState.CONNECTING
    assert page.leave_button.isEnabled()

    site = page.session.job
    supernode_log = joined.event_file.parent / "supernode" / "supernode.log"
    qtbot.waitUntil(supernode_log.exists, timeout=120_000)  # `fedseg site` is up and started its SuperNode
    qtbot.mouseClick(page.demo_button, Qt.MouseButton.LeftButton)  # Stop demo: leave, then stop the demo
    qtbot.waitUntil(lambda: page.run.state is SiteState.LEFT and not page.demo.running, timeout=60_000)
    assert site.exit_code == 0 and page.demo_button.text().strip() == "Start demo"
    # The demo was stopped before it finished: no report is promised, no site invented.
    assert page.demo_status.text() == "The demo federation was stopped before it wrote its report."
    assert not error_dialogs(page)
    wait_for(lambda: not flower_family(tmp_path), 30, "the site's processes to end")
