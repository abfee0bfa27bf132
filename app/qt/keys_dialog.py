"""The keys dialog: make this site's node key pair and the federation's HE keys, see their fingerprints
and export the public halves. Keys already in the folder are shown, never replaced without asking; on
Replace the old files are kept under a new name (app.services.keys).

    dialog = KeysDialog(parent, folder, site_name)
    if dialog.exec() == QDialog.DialogCode.Accepted:
        dialog.node_key_path, dialog.he_secret_path  # the private files shown; None where there is none
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from PySide6.QtWidgets import (
    QDialog,
    QDialogButtonBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QVBoxLayout,
    QWidget,
)

from app.qt.dialogs import ask, error_sentence, show_error
from app.qt.widgets.common import Card, PathField, button, hint
from app.services.keys import (
    KeySet,
    KeysExistError,
    export_public,
    key_name,
    make_he_keys,
    make_node_keys,
    read_he_keys,
    read_node_keys,
)
from segmentation.errors import FedSegError

REPLACE = "Replace"
USE_EXISTING = "Use the existing keys"
NONE_YET = "none yet"


class KeyCard(Card):
    """One kind of keys: their fingerprint and private file, Make and Export public part…"""

    def __init__(self, title: str, make: str, note: str) -> None:
        super().__init__(title)
        form = QFormLayout()
        self.fingerprint = QLabel(NONE_YET)
        self.fingerprint.setObjectName("Muted")
        form.addRow("Fingerprint", self.fingerprint)
        self.private = QLabel("—")
        self.private.setWordWrap(True)
        form.addRow("Kept here", self.private)
        self.body.addLayout(form)
        self.body.addWidget(hint(note))
        row = QHBoxLayout()
        self.make = button(make, primary=True)
        self.export = button("Export public part…", "export")
        row.addWidget(self.make)
        row.addWidget(self.export)
        row.addStretch(1)
        self.body.addLayout(row)

    def show_keys(self, keys: KeySet | None, problem: str = "") -> None:
        self.fingerprint.setText(problem or (keys.fingerprint if keys else NONE_YET))
        self.private.setText(str(keys.private) if keys else "—")
        self.export.setEnabled(keys is not None)


class KeysDialog(QDialog):
    """Make, show and export this site's keys in `folder`; `site_name` names the node key files."""

    def __init__(self, parent: QWidget | None, folder: Path, site_name: str) -> None:
        super().__init__(parent)
        self.setWindowTitle("Federation keys")
        self.setMinimumWidth(620)
        self.node: KeySet | None = None
        self.he: KeySet | None = None
        self.node_key_path: Path | None = None
        self.he_secret_path: Path | None = None
        column = QVBoxLayout(self)
        top = QFormLayout()
        self.folder = PathField("folder", "Folder for the keys")
        self.folder.set_path(folder)
        top.addRow("Folder", self.folder)
        self.name = QLineEdit(key_name(site_name))
        self.name.setToolTip("File name of the node key pair: NAME.key and NAME.pub")
        top.addRow("Key name", self.name)
        column.addLayout(top)
        self.node_card = KeyCard(
            "Node key pair", "Make node keys",
            "Proves to the server that this site is this site. Give NAME.pub to the federation operator "
            "(Export public part…); NAME.key never leaves this computer.")
        self.he_card = KeyCard(
            "HE keys", "Make HE keys",
            "Encrypts the model updates so the server can add them but not read them. One site makes them "
            "and copies secret.ctx to every other site, never to the server; public.ctx goes to the "
            "operator.")
        column.addWidget(self.node_card)
        column.addWidget(self.he_card)
        self.status = hint("")
        column.addWidget(self.status)
        buttons = QDialogButtonBox()
        buttons.addButton("Use these keys", QDialogButtonBox.ButtonRole.AcceptRole)
        buttons.addButton(QDialogButtonBox.StandardButton.Close)
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        column.addWidget(buttons)
        self.node_card.make.clicked.connect(self.make_node)
        self.he_card.make.clicked.connect(self.make_he)
        self.node_card.export.clicked.connect(lambda: self.export(self.node))
        self.he_card.export.clicked.connect(lambda: self.export(self.he))
        self.folder.changed.connect(self.read)
        self.name.textChanged.connect(self.read)
        self.read()

    @property
    def key_folder(self) -> Path:
        return self.folder.path or Path.cwd()

    # -- reading and making --------------------------------------------------------------------
    def read(self) -> None:
        """Show the keys already in the folder, or why they cannot be used."""
        self.node = self._show(self.node_card, lambda: read_node_keys(self.key_folder, self.name.text()))
        self.he = self._show(self.he_card, lambda: read_he_keys(self.key_folder))

    def _show(self, card: KeyCard, read: Callable[[], KeySet | None]) -> KeySet | None:
        try:
            keys = read()
        except FedSegError as error:
            card.show_keys(None, f"not usable: {error}")
            return None
        card.show_keys(keys)
        return keys

    def make_node(self) -> None:
        self._make("node keys", lambda replace: make_node_keys(self.key_folder, self.name.text(), replace))

    def make_he(self) -> None:
        self._make("HE keys", lambda replace: make_he_keys(self.key_folder, replace))

    def _make(self, what: str, make: Callable[[bool], KeySet]) -> None:
        """Make keys; when some are there already, ask: Replace (old ones kept) or Use the existing."""
        try:
            try:
                made = make(False)
            except KeysExistError as error:
                choice = ask(self, f"The {what} exist", error_sentence(error, ""), (REPLACE, USE_EXISTING))
                if choice != REPLACE:
                    self.read()
                    self.status.setText(f"Kept the existing {what}." if choice else "")
                    return
                made = make(True)
        except (FedSegError, OSError) as error:
            show_error(self, f"Could not make the {what}", error, f"making the {what}")
            self.read()
            return
        self.read()
        kept = f" The old files are kept as {', '.join(path.name for path in made.set_aside)}." \
            if made.set_aside else ""
        self.status.setText(f"Made new {what}: {made.fingerprint}.{kept}")

    def export(self, keys: KeySet | None) -> None:
        """Copy the public file to a folder the user picks; a file already there is replaced only when
        the user says so (and kept under a new name)."""
        if keys is None:
            return
        chosen = QFileDialog.getExistingDirectory(self, f"Export {keys.public.name} to", str(Path.home()))
        if not chosen:
            return
        try:
            try:
                target = export_public(keys, Path(chosen))
            except KeysExistError as error:
                if ask(self, "Replace the file?", error_sentence(error, ""), (REPLACE,)) != REPLACE:
                    return
                target = export_public(keys, Path(chosen), replace=True)
        except (FedSegError, OSError) as error:
            show_error(self, "Could not export the public part", error, "exporting")
            return
        self.status.setText(f"Exported {target}.")

    def accept(self) -> None:
        self.node_key_path = self.node.private if self.node else None
        self.he_secret_path = self.he.private if self.he else None
        super().accept()
