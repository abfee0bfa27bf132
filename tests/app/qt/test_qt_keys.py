"""The keys dialog as a site admin uses it: make node and HE keys and see the fingerprints their files
carry, be asked before existing keys are replaced (and find the old ones kept), export only the public
halves, and hand the private paths back to the Federation page."""

import pytest
from PySide6.QtWidgets import QDialog, QFileDialog

from app.qt.keys_dialog import REPLACE, USE_EXISTING, KeysDialog
from federation.he.context import load_public_context, load_secret_context
from federation.keys import fingerprint, generate_node_keys, load_public_key


@pytest.fixture
def dialog(qtbot, window, tmp_path):
    keys = KeysDialog(window, tmp_path / "keys", "CT Hospital")
    qtbot.addWidget(keys)
    return keys


def test_making_keys_shows_the_files_fingerprints_and_returns_the_private_paths(qtbot, dialog, tmp_path):
    folder = tmp_path / "keys"
    assert dialog.name.text() == "CT-Hospital"
    assert dialog.node_card.fingerprint.text() == "none yet" and not dialog.node_card.export.isEnabled()
    dialog.node_card.make.click()
    dialog.he_card.make.click()
    public = folder / "CT-Hospital.pub"
    assert dialog.node_card.fingerprint.text() == fingerprint(load_public_key(public))
    assert dialog.he_card.fingerprint.text() == load_secret_context(folder / "secret.ctx").fingerprint
    assert load_public_context(folder / "public.ctx").fingerprint == dialog.he_card.fingerprint.text()
    dialog.accept()
    assert dialog.result() == QDialog.DialogCode.Accepted
    assert dialog.node_key_path == folder / "CT-Hospital.key"
    assert dialog.he_secret_path == folder / "secret.ctx"


def test_existing_keys_are_shown_and_replaced_only_when_asked(qtbot, window, tmp_path, questions):
    folder = tmp_path / "keys"
    old = generate_node_keys(folder, "CT-Hospital")
    old_private = old.private_key.read_bytes()
    dialog = KeysDialog(window, folder, "CT Hospital")
    qtbot.addWidget(dialog)
    assert dialog.node_card.fingerprint.text() == old.fingerprint

    questions.answers = [USE_EXISTING, "Cancel"]
    dialog.node_card.make.click()
    dialog.node_card.make.click()
    assert len(questions.asked) == 2
    assert "CT-Hospital.key and CT-Hospital.pub already exist" in questions.asked[0]
    assert sorted(path.name for path in folder.iterdir()) == ["CT-Hospital.key", "CT-Hospital.pub"]
    assert old.private_key.read_bytes() == old_private
    assert dialog.node_card.fingerprint.text() == old.fingerprint

    questions.answers = [REPLACE]
    dialog.node_card.make.click()
    new = fingerprint(load_public_key(folder / "CT-Hospital.pub"))
    assert new != old.fingerprint and dialog.node_card.fingerprint.text() == new
    kept = list(folder.glob("CT-Hospital.key.replaced-*"))
    assert len(kept) == 1 and kept[0].read_bytes() == old_private
    assert "old files are kept" in dialog.status.text()
    dialog.reject()
    assert dialog.node_key_path is None  # closed without "Use these keys"


def test_export_copies_the_public_part_and_asks_before_replacing(qtbot, dialog, tmp_path, questions,
                                                                 monkeypatch):
    out = tmp_path / "to-operator"
    out.mkdir()
    monkeypatch.setattr(QFileDialog, "getExistingDirectory", lambda *args: str(out))
    dialog.node_card.make.click()
    dialog.node_card.export.click()
    first = (tmp_path / "keys" / "CT-Hospital.pub").read_bytes()
    assert [path.name for path in out.iterdir()] == ["CT-Hospital.pub"]
    assert (out / "CT-Hospital.pub").read_bytes() == first

    questions.answers = [REPLACE, "Cancel"]
    dialog.node_card.make.click()  # a new pair: the exported copy is now an old one
    dialog.he_card.make.click()
    dialog.he_card.export.click()
    assert sorted(path.name for path in out.iterdir()) == ["CT-Hospital.pub", "public.ctx"]  # no secret.ctx
    dialog.node_card.export.click()  # asks; Cancel
    assert (out / "CT-Hospital.pub").read_bytes() == first
    questions.answers = [REPLACE]
    dialog.node_card.export.click()
    assert (out / "CT-Hospital.pub").read_bytes() == (tmp_path / "keys" / "CT-Hospital.pub").read_bytes()
    assert [path.read_bytes() for path in out.glob("CT-Hospital.pub.backup-*")] == [first]
    assert "already exists" in questions.asked[-1]
