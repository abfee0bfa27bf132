"""The Federation page's channel: no TLS only by explicit choice, badges and a sentence that say what is
true for the settings, differential privacy's numbers and HE's masking settings (checked, remembered,
written to site.toml), and a join that gives up after its timeout with the reason (real `fedseg site`)."""

from __future__ import annotations

from pathlib import Path

import pytest
from PySide6.QtCore import Qt

from app.models.federation import SiteState
from app.qt.pages.federation import FederationPage
from federation.config import load_site_config
from federation.he.context import write_he_keys
from federation.he.masking_settings import MaskingSettings
from federation.keys import generate_node_keys
from federation.processes import free_port
from segmentation.settings import PrivacySettings
from segmentation.synth import generate_dataset


@pytest.fixture
def page(window, tmp_path):
    page = window.navigate("federation")
    page.name.setText("CT Hospital")
    page.data.set_path(generate_dataset(tmp_path / "data", "ct", 2, 0, size=16).root)
    page.address.setText(f"127.0.0.1:{free_port()}")  # nobody listens there
    page.port.setValue(free_port())
    page.ca.set_path(None)
    page.node_key.set_path(None)
    page.he.set_path(None)
    return page


def badges(page) -> list[tuple[str, str]]:
    return [(badge.text(), badge.property("tone")) for badge in page.channel_badges]


def test_joining_without_tls_needs_the_unencrypted_choice(qtbot, page, error_dialogs, tmp_path):
    assert not page.unencrypted.isChecked()
    assert badges(page)[0] == ("No TLS: unencrypted", "bad") and "UNENCRYPTED" in page.channel_line.text()
    qtbot.mouseClick(page.join_button, Qt.MouseButton.LeftButton)
    dialogs = error_dialogs(page)
    assert dialogs and "unencrypted connection (testing only)" in dialogs[0].text()
    assert page.session.job is None and page.run.state is SiteState.IDLE
    certificate = tmp_path / "ca.crt"
    certificate.write_text("not read until joining")
    page.ca.set_path(certificate)
    assert badges(page)[0] == ("TLS", "good") and not page.unencrypted.isEnabled()
    assert "over TLS" in page.channel_line.text()


def test_a_join_that_nobody_answers_gives_up_after_the_timeout_with_the_reason(qtbot, window, page,
                                                                                error_dialogs):
    page.unencrypted.setChecked(True)
    page.join_timeout.setValue(5)  # the spin box's least
    page.dp.setChecked(True)
    page.delta.setText("1e-6")
    qtbot.mouseClick(page.join_button, Qt.MouseButton.LeftButton)
    assert page.run.state is SiteState.CONNECTING
    written = load_site_config(page.session.job.config.source)
    assert not written.tls_enabled and written.join_timeout == 5.0
    assert written.privacy == PrivacySettings(dp=True, noise_multiplier=1.5, max_grad_norm=1.0, delta=1e-6,
                                              epsilon_budget=10.0)
    qtbot.waitUntil(lambda: page.run.state is SiteState.CONNECTING and "5 s" in page.message.text(),
                    timeout=60_000)
    qtbot.waitUntil(lambda: page.run.state is SiteState.FAILED, timeout=120_000)
    assert page.badge.text() == "Failed" and "does not answer" in page.message.text()
    qtbot.waitUntil(lambda: bool(error_dialogs(page)), timeout=10_000)
    assert "does not answer" in error_dialogs(page)[0].text()
    assert page.join_button.isEnabled() and not page.leave_button.isEnabled()
    settings = window.workbench.settings.site
    assert settings.unencrypted and settings.join_timeout == 5.0  # remembered for next time
    assert settings.dp and settings.delta == 1e-6
    assert Path(written.source).parent.name == "CT-Hospital"


def test_the_home_page_says_what_leaves_the_site_with_the_current_settings(qtbot, window):
    site = window.workbench.settings.site
    site.ca_certificate, site.unencrypted, site.he_context = "", True, ""
    window.navigate("settings")
    step = window.navigate("home").step_labels["Join the federation"]
    assert "UNENCRYPTED" in step.text() and "in plaintext to the server" in step.text()
    site.ca_certificate, site.unencrypted, site.he_context = "ca.crt", False, "secret.ctx"
    window.navigate("settings")
    window.navigate("home")
    assert "over TLS" in step.text() and "cannot read" in step.text() and "UNENCRYPTED" not in step.text()
    assert "masked" in step.text()


def test_differential_privacy_is_edited_while_on_checked_as_typed_and_reloaded(qtbot, window, page, tmp_path,
                                                                               error_dialogs):
    fields = (page.noise, page.clipping, page.delta, page.budget)
    assert not page.dp.isChecked() and not any(field.isEnabled() for field in fields)
    assert badges(page)[3] == ("No DP", "") and "differentially private" not in page.channel_line.text()
    page.dp.setChecked(True)
    assert all(field.isEnabled() for field in fields) and badges(page)[3] == ("DP", "good")
    assert "differentially private" in page.channel_line.text()
    page.unencrypted.setChecked(True)
    page.delta.setText("one in a million")
    assert page.privacy_problem.text() == "Privacy delta must lie between 0 and 1, got nan"
    assert page.privacy_problem.isVisibleTo(page)
    page.join_button.click()
    assert error_dialogs(page) and "delta must lie between 0 and 1" in error_dialogs(page)[0].text()
    assert page.session.job is None and not (window.workbench.settings.workspace_dir / "federation").exists()
    page.delta.setText("2e-6")
    assert not page.privacy_problem.isVisibleTo(page)
    site = window.workbench.settings.site  # what a join remembers, shown by the next page
    site.dp, site.noise_multiplier, site.delta, site.epsilon_budget = True, 0.7, 2e-6, 3.5
    reloaded = FederationPage(window.workbench, window)
    qtbot.addWidget(reloaded)
    assert reloaded.dp.isChecked() and reloaded.noise.isEnabled()
    assert (reloaded.noise.value(), reloaded.delta.text(), reloaded.budget.value()) == (0.7, "2e-06", 3.5)


def test_masking_settings_are_edited_with_he_checked_written_to_site_toml_and_remembered(
        qtbot, window, page, tmp_path, error_dialogs):
    fields = (page.peer_keys, page.min_mask_sites)
    assert not any(field.isEnabled() for field in fields) and "masked" not in page.channel_line.text()
    assert (page.min_mask_sites.value(), page.min_mask_sites.minimum()) == (3, 2)
    assert "cannot invent sites" in page.peer_keys.toolTip() and "two-site" in page.min_mask_sites.toolTip()
    peers = tmp_path / "peers"
    for name in ("CT-Hospital", "MR-T1", "MR-T2"):
        generate_node_keys(peers, name)
    empty = tmp_path / "empty"
    empty.mkdir()
    page.unencrypted.setChecked(True)
    page.he.set_path(write_he_keys(tmp_path / "he").secret_context)
    qtbot.waitUntil(lambda: page.fingerprint.text() not in ("—", "reading…"), timeout=30_000)
    assert all(field.isEnabled() for field in fields) and "masked" in page.channel_line.text()
    page.peer_keys.set_path(empty)
    page.join_button.click()
    assert error_dialogs(page) and "holds no .pub files" in error_dialogs(page)[0].text()
    assert page.session.job is None and not (window.workbench.settings.workspace_dir / "federation").exists()
    page.peer_keys.set_path(peers)
    page.min_mask_sites.setValue(2)
    assert (page.form().peer_keys, page.form().min_mask_sites) == (str(peers), 2)
    page.join_button.click()
    assert page.run.state is SiteState.CONNECTING
    written = load_site_config(page.session.job.config.source)
    assert written.masking == MaskingSettings(None, peers, 2) and len(written.masking.pinned()) == 3
    page.leave()
    site = window.workbench.settings.site  # remembered for next time, shown by the next page
    assert (site.peer_keys, site.min_mask_sites) == (str(peers), 2)
    reloaded = FederationPage(window.workbench, window)
    qtbot.addWidget(reloaded)
    assert reloaded.peer_keys.path == peers and reloaded.min_mask_sites.value() == 2
    assert reloaded.peer_keys.isEnabled() and reloaded.min_mask_sites.isEnabled()
    qtbot.waitUntil(lambda: reloaded.fingerprint.text() not in ("—", "reading…"), timeout=30_000)


def red_pixels(widget) -> int:
    image = widget.grab().toImage()
    count = 0
    for y in range(0, image.height(), 2):
        for x in range(0, image.width(), 2):
            colour = image.pixelColor(x, y)
            count += colour.red() > colour.green() + 60 and colour.red() > colour.blue() + 60
    return count


def test_a_disabled_leave_button_looks_disabled(qtbot, page):
    """The red of a danger button is for one that does something: disabled, it is grey like the rest."""
    assert not page.leave_button.isEnabled()
    assert red_pixels(page.leave_button) == 0
    page.leave_button.setEnabled(True)
    assert red_pixels(page.leave_button) > 20


def test_keys_made_in_the_keys_dialog_fill_the_form_and_the_badges(qtbot, window, page, monkeypatch):
    from app.qt.keys_dialog import KeysDialog

    def make_both_and_use(dialog: KeysDialog) -> int:
        dialog.node_card.make.click()
        dialog.he_card.make.click()
        dialog.accept()
        return 1

    monkeypatch.setattr(KeysDialog, "exec", make_both_and_use)
    page.keys_button.click()
    folder = window.workbench.settings.workspace_dir / "keys"
    assert page.node_key.path == folder / "CT-Hospital.key" and page.node_key.path.is_file()
    assert page.he.path is not None and page.he.path.parent == folder and page.he.path.is_file()
    assert [text for text, _ in badges(page)][1:] == ["Node key", "HE", "No DP"]
    qtbot.waitUntil(lambda: page.fingerprint.text() not in ("—", "reading…"), timeout=30_000)

