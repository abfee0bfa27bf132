"""Federation (site admin): this site's settings, Test connection, Join and Leave (`fedseg site` in a
child process), status and per-round progress, and the site process's log. Start demo runs the local demo
federation in the background and joins it as its CT site, so one person watches a whole federation."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QTimer
from PySide6.QtWidgets import (
    QAbstractItemView,
    QCheckBox,
    QDoubleSpinBox,
    QFormLayout,
    QGridLayout,
    QGroupBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QPlainTextEdit,
    QSpinBox,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
)

from app.models.federation import SiteRun, SiteState
from app.models.study import MODALITY_CAPTIONS
from app.qt.dialogs import show_error
from app.qt.widgets.common import (
    Badge,
    Card,
    Page,
    PathField,
    StatusCard,
    button,
    combo,
    float_field,
    hint,
    int_field,
)
from app.qt.worker import run_in_background
from app.services.federation_site import SiteForm, check_reachable, he_fingerprint
from app.services.site_session import DemoSession, SiteSession
from app.services.workbench import Workbench
from segmentation.errors import ConfigError, FedSegError

POLL_MS = 500
DEMO_POLL_MS = 1000
TONES = {SiteState.IDLE: "", SiteState.CONNECTING: "warn", SiteState.WAITING: "running",
         SiteState.TRAINING: "running", SiteState.LEAVING: "warn", SiteState.LEFT: "",
         SiteState.FAILED: "bad"}


class FederationPage(Page):
    def __init__(self, workbench: Workbench, shell) -> None:
        super().__init__("Federation", "Join the federation as this site. Only model updates (encrypted with "
                         "homomorphic encryption when the federation uses it) and summary numbers leave.")
        self.workbench, self.shell = workbench, shell
        self.run = SiteRun()
        self.session = SiteSession(self.run, workbench.federation_metrics)
        self.demo = DemoSession(self.session, workbench.settings.workspace_dir / "demo-federation")
        self.demo_timer = QTimer(self)
        self.demo_timer.setInterval(DEMO_POLL_MS)
        self.demo_timer.timeout.connect(self.poll_demo)
        self.timer = QTimer(self)
        self.timer.setInterval(POLL_MS)
        self.timer.timeout.connect(self.poll)
        row = QHBoxLayout()
        row.setSpacing(12)
        row.addWidget(self._site_card())
        right = QVBoxLayout()
        right.setSpacing(12)
        right.addWidget(self._demo_card())
        right.addWidget(self._status_card(), 2)
        log = Card("Site process log")
        self.log = QPlainTextEdit()
        self.log.setObjectName("Log")
        self.log.setReadOnly(True)
        self.log.setPlaceholderText("The site process writes here once the site joins.")
        log.body.addWidget(self.log, 1)
        right.addWidget(log, 1)
        row.addLayout(right, 1)
        self.content.addLayout(row, 1)
        self.run.changed.connect(self.refresh)
        workbench.federation_metrics.changed.connect(self.refresh)  # the server's plan, when followed
        self.refresh()

    def _site_card(self) -> Card:
        site = self.workbench.settings.site
        card = Card("This site")
        card.setFixedWidth(400)
        form = QFormLayout()
        form.setSpacing(10)
        self.name = QLineEdit(site.name)
        self.name.setPlaceholderText("e.g. CT Hospital (others see this name)")
        form.addRow("Site name", self.name)
        tags = [(tag, caption) for tag, caption in MODALITY_CAPTIONS.items() if tag != "unknown"]
        self.modality = combo(tags, site.modality)
        form.addRow("Modality", self.modality)
        self.data = PathField("folder", "The site's dataset folder", placeholder="folder with dataset.json")
        self.data.set_path(site.data_dir or (self.workbench.settings.recent_datasets or [""])[0] or None)
        form.addRow("Dataset", self.data)
        self.address = QLineEdit(site.server_address)
        form.addRow("Server", self.address)
        self.port = QSpinBox()
        self.port.setRange(1024, 65535)
        self.port.setValue(9094)
        self.port.setToolTip("Local port between the SuperNode and the ClientApp; each site on one "
                             "computer needs its own")
        form.addRow("Local port", self.port)
        self.ca = PathField("file", "The federation's CA certificate", "Certificates (*.crt *.pem);;All (*)",
                            placeholder="ca.crt from the federation's operator")
        self.ca.set_path(site.ca_certificate or None)
        self.ca.changed.connect(self._channel_changed)
        form.addRow("TLS CA", self.ca)
        self.unencrypted = QCheckBox("Unencrypted connection (testing only)")
        self.unencrypted.setChecked(site.unencrypted)
        self.unencrypted.setToolTip("Join without TLS: model updates cross the network readable by anyone on "
                                    "the way. Only for a test federation on one computer or a closed lab.")
        self.unencrypted.toggled.connect(self._channel_changed)
        form.addRow(self.unencrypted)  # the whole row: its words must show in full
        self.node_key = PathField("file", "This site's node key", placeholder="optional: make one with Keys…")
        self.node_key.set_path(site.node_key or None)
        self.node_key.changed.connect(self._channel_changed)
        form.addRow("Node key", self.node_key)
        self.he = PathField("file", "The shared HE secret context", placeholder="optional: secret.ctx")
        self.he.set_path(site.he_context or None)
        self.he.changed.connect(self._he_changed)
        form.addRow("HE key", self.he)
        self.fingerprint = QLabel("—")
        self.fingerprint.setObjectName("Muted")
        form.addRow("Fingerprint", self.fingerprint)
        self.peer_keys = PathField("folder", "The federation's node public keys (.pub)",
                                   placeholder="optional: folder of every site's .pub")
        self.peer_keys.set_path(site.peer_keys or None)
        self.peer_keys.setToolTip("Mask only with sites whose mask keys are signed by one of these node "
                                  "public keys (exported by Keys… at each site), so the server cannot "
                                  "invent sites")
        form.addRow("Peer node keys", self.peer_keys)
        self.min_mask_sites = int_field(
            2, 1000, "Refuse a round of fewer sites than this, this one included, so the server cannot leave "
                     "this site alone with one colluding site; set 2 only for a two-site federation",
            suffix=" sites")
        self.min_mask_sites.setValue(site.min_mask_sites)
        form.addRow("Mask with at least", self.min_mask_sites)
        self.join_timeout = float_field(
            5, 3600, 0, tooltip="How long Join waits for the server to accept this site before it gives up "
                                "and says why (unreachable, TLS mismatch, key refused)", suffix=" s")
        self.join_timeout.setValue(site.join_timeout)
        form.addRow("Give up after", self.join_timeout)
        card.body.addLayout(form)
        card.body.addWidget(self._privacy_box())
        channel = QGridLayout()  # two by two: four badges in a row cut their words off
        channel.setSpacing(6)
        self.channel_badges = [Badge() for _ in range(4)]
        for index, badge in enumerate(self.channel_badges):
            channel.addWidget(badge, index // 2, index % 2)
        channel.setColumnStretch(2, 1)
        card.body.addLayout(channel)
        self.channel_line = hint("")
        card.body.addWidget(self.channel_line)
        card.body.addWidget(hint("Compare the fingerprint with the operator's: every site of a federation "
                                 "holds the same HE key, the server only its public part."))
        card.body.addStretch(1)
        self.keys_button = button("Keys…", "key")
        self.keys_button.setToolTip("Make this site's node key pair and the federation's HE keys, see their "
                                    "fingerprints and export the public parts for the operator")
        self.keys_button.clicked.connect(self.make_keys)
        card.body.addWidget(self.keys_button)
        buttons = QHBoxLayout()
        self.test_button = button("Test connection")
        self.test_button.clicked.connect(self.test_connection)
        self.join_button = button("Join", "federation", primary=True)
        self.join_button.clicked.connect(self.join)
        self.leave_button = button("Leave", "stop", object_name="Danger")
        self.leave_button.clicked.connect(self.leave)
        for widget in (self.test_button, self.join_button, self.leave_button):
            buttons.addWidget(widget)
        card.body.addLayout(buttons)
        if site.he_context:
            self._he_changed(site.he_context)
        self._channel_changed()
        return card

    def _privacy_box(self) -> QGroupBox:
        """Differential privacy: DP-SGD's numbers, editable while it is on (the site.toml's [privacy])."""
        site = self.workbench.settings.site
        box = QGroupBox("Differential privacy")
        form = QFormLayout(box)
        self.dp = QCheckBox("Train with DP-SGD")
        self.dp.setChecked(site.dp)
        self.dp.setToolTip("Clip each training slice's gradient and add noise, so the updates this site "
                           "shares bound what they tell about any one slice (the unit of privacy; a patient "
                           "of k slices is protected far more weakly). Needs a 2D plan.")
        self.dp.toggled.connect(self._channel_changed)
        form.addRow(self.dp)
        self.noise = _privacy_field(site.noise_multiplier, 100, 2, "Gaussian noise added to each batch, as a "
                               "multiple of the clipping norm: more noise spends less epsilon per round")
        form.addRow("Noise multiplier", self.noise)
        self.clipping = _privacy_field(site.max_grad_norm, 100, 2, "Each slice's gradient is clipped to this "
                                  "norm before the noise is added")
        form.addRow("Clipping norm", self.clipping)
        self.delta = QLineEdit(f"{site.delta:g}")
        self.delta.setToolTip("The chance that the guarantee fails: keep it well below one over the number "
                              "of training slices")
        form.addRow("Delta", self.delta)
        self.budget = _privacy_field(site.epsilon_budget, 1000, 1, "The epsilon all this site's training may "
                                "spend, across rounds and restarts: a round that would exceed it is refused "
                                "with code 108 (the site keeps evaluating)")
        form.addRow("Epsilon budget", self.budget)
        for field in (self.noise, self.clipping, self.budget):
            field.valueChanged.connect(self._channel_changed)
        self.delta.textChanged.connect(self._channel_changed)
        self.privacy_problem = hint("")
        form.addRow(self.privacy_problem)
        return box

    def _demo_card(self) -> Card:
        card = Card("Local demo federation")
        self.demo_status = hint("A server and an MR T1 and an MR T2 site on this computer, with this "
                                "workbench joining as the CT site: its rounds show below, every site's "
                                "Dice on Metrics.")
        card.header.addWidget(self.demo_status, 1)
        self.demo_button = button("Start demo", "demo")
        self.demo_button.clicked.connect(self.toggle_demo)
        card.header.addWidget(self.demo_button)
        return card

    def _status_card(self) -> Card:
        card = StatusCard("Status", "Not joined")
        self.badge, self.message, self.bar = card.badge, card.message, card.bar
        self.plan_line = hint("")
        self.plan_line.setToolTip("Target spacing and patch size every site trains and predicts with")
        card.body.addWidget(self.plan_line)
        self.table = QTableWidget(0, 5)
        self.table.setHorizontalHeaderLabels(["Round", "Local loss", "Dice before", "Dice after",
                                              "Global Dice here"])
        self.table.verticalHeader().hide()
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.setAlternatingRowColors(True)
        self.table.setShowGrid(False)
        self.table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Stretch)
        card.body.addWidget(self.table, 1)
        card.body.addWidget(hint("Dice before and after: the global model on this site's validation cases, "
                                 "then the same after local training. Every site's numbers are on Metrics."))
        return card

    # -- actions -----------------------------------------------------------------------------
    def form(self) -> SiteForm:
        return SiteForm(
            name=self.name.text().strip(), modality=self.modality.currentData(),
            data_dir=str(self.data.path or ""), server_address=self.address.text().strip(),
            ca_certificate=str(self.ca.path or ""), unencrypted=self.unencrypted.isChecked(),
            node_key=str(self.node_key.path or ""), he_context=str(self.he.path or ""),
            peer_keys=str(self.peer_keys.path or ""), min_mask_sites=self.min_mask_sites.value(),
            clientappio_port=self.port.value(), join_timeout=self.join_timeout.value(),
            dp=self.dp.isChecked(), noise_multiplier=self.noise.value(), max_grad_norm=self.clipping.value(),
            delta=_float(self.delta.text()), epsilon_budget=self.budget.value(),
        )

    def _remember(self, form: SiteForm) -> None:
        site = self.workbench.settings.site
        site.name, site.modality, site.data_dir = form.name, form.modality, form.data_dir
        site.server_address, site.ca_certificate = form.server_address, form.ca_certificate
        site.node_key, site.he_context = form.node_key, form.he_context
        site.peer_keys, site.min_mask_sites = form.peer_keys, form.min_mask_sites
        site.unencrypted, site.join_timeout = form.unencrypted, form.join_timeout
        site.dp, site.noise_multiplier, site.delta = form.dp, form.noise_multiplier, form.delta
        site.max_grad_norm, site.epsilon_budget = form.max_grad_norm, form.epsilon_budget
        self.workbench.save()

    def _channel_changed(self, *_args) -> None:
        """The badges and the sentence say what protects this site's link with the settings as they are;
        the privacy numbers are editable while DP is on and say at once why they cannot be used, the
        masking settings while an HE secret context is given."""
        form = self.form()
        channel = form.channel()
        for badge, (text, tone) in zip(self.channel_badges, channel.badges(), strict=True):
            badge.set(text, tone)
        self.channel_line.setText(channel.sentence())
        self.unencrypted.setEnabled(not self.ca.path)
        for field in (self.noise, self.clipping, self.delta, self.budget):
            field.setEnabled(form.dp)
        for field in (self.peer_keys, self.min_mask_sites):
            field.setEnabled(bool(form.he_context))
        problem = form.privacy_problem()
        self.privacy_problem.setText(problem[:1].upper() + problem[1:])
        self.privacy_problem.setVisible(bool(problem))

    def _he_changed(self, text: str) -> None:
        self._channel_changed()
        path = Path(text.strip()) if text.strip() else None
        if path is None or not path.is_file():
            self.fingerprint.setText("—")
            return
        self.fingerprint.setText("reading…")
        run_in_background(self, lambda _report: he_fingerprint(path), self.fingerprint.setText,
                          lambda error: self.fingerprint.setText(f"not usable: {error}"))

    def make_keys(self) -> None:
        """Make or pick this site's keys in the Keys dialog and put their paths in the form."""
        from app.qt.keys_dialog import KeysDialog

        folder = self.workbench.settings.workspace_dir / "keys"
        dialog = KeysDialog(self, folder, self.name.text().strip() or "site")
        if not dialog.exec():
            return
        if dialog.node_key_path is not None:
            self.node_key.set_path(dialog.node_key_path)
        if dialog.he_secret_path is not None:
            self.he.set_path(dialog.he_secret_path)
        self._channel_changed()

    def test_connection(self) -> None:
        address = self.address.text().strip()
        self.message.setText(f"Testing {address}…")
        run_in_background(self, lambda _report: check_reachable(address), self.message.setText,
                          lambda error: show_error(self, "No connection", error, "testing"))

    def join(self) -> None:
        """Write site.toml (checked by the federation's loader) and start the site process with it."""
        form = self.form()
        try:
            self.session.join(form, self.workbench.settings.workspace_dir)
        except (FedSegError, OSError) as error:
            show_error(self, "Could not join", error, "joining the federation")
            return
        self._remember(form)
        self.timer.start()

    def leave(self) -> None:
        self.session.leave()

    def poll(self) -> None:
        failure = self.session.poll()
        self.log.setPlainText(self.session.log_tail(60))
        self.log.verticalScrollBar().setValue(self.log.verticalScrollBar().maximum())
        if not self.session.active:
            self.timer.stop()
        if failure:
            show_error(self, "The site stopped", ConfigError(failure))

    def toggle_demo(self) -> None:
        """Start the demo federation in the background and join it as its CT site, or leave and stop it."""
        if self.demo.running:
            self.demo.stop()
            self.demo_status.setText("Stopping the demo federation…")
            return
        try:
            self.demo.start()
        except (FedSegError, OSError) as error:
            show_error(self, "Could not start the demo federation", error, "starting the demo")
            return
        self.demo_button.setText(" Stop demo")
        self.demo_status.setText("Starting a server and two sites; this workbench then joins as the CT site "
                                 "(the first round takes a minute)…")
        self.demo_timer.start()

    def join_demo(self, site_config: Path) -> None:
        """Fill the form from the demo's site.toml for this workbench and Join with it, as a person would."""
        from federation.config import load_site_config

        try:
            site = load_site_config(site_config)
        except FedSegError as error:
            self.demo.joined_with(None)
            show_error(self, "Could not join the demo federation", error, "reading the demo's site.toml")
            return
        self.name.setText(site.name)
        self.modality.setCurrentIndex(self.modality.findData(site.modality))
        self.data.set_path(site.data_dir)
        self.address.setText(site.server_address)
        self.port.setValue(site.clientappio_port)
        self.ca.set_path(site.ca_certificate if site.tls_enabled else None)
        self.unencrypted.setChecked(not site.tls_enabled)
        self.node_key.set_path(site.node_private_key)
        self.he.set_path(site.he_secret_context)
        self.peer_keys.set_path(site.masking.peer_keys)
        self.min_mask_sites.setValue(site.masking.min_sites)
        self.dp.setChecked(site.privacy.dp)
        self.noise.setValue(site.privacy.noise_multiplier)
        self.clipping.setValue(site.privacy.max_grad_norm)
        self.delta.setText(f"{site.privacy.delta:g}")
        self.budget.setValue(site.privacy.epsilon_budget)
        self.join()
        self.demo.joined_with(self.session.job)

    def poll_demo(self) -> None:
        """Join as the demo's announced site, follow its server's events on Metrics, report its end."""
        update = self.demo.poll()
        if update.join is not None:
            self.join_demo(update.join)
        if update.follow is not None:
            self.shell.page("metrics").follow_file(update.follow)
        if update.status:
            self.demo_status.setText(update.status)
        if not update.ended:
            return
        self.demo_timer.stop()
        self.demo_button.setText(" Start demo")
        if update.failure:
            show_error(self, "The demo federation failed", ConfigError(update.failure))

    def shutdown(self) -> None:
        self.demo.stop()
        self.session.leave()

    # -- view ----------------------------------------------------------------------------------
    def refresh(self) -> None:
        run = self.run
        active = run.state.active
        self.join_button.setEnabled(not active)
        self.leave_button.setEnabled(active and run.state is not SiteState.LEAVING)
        self.demo_button.setEnabled(self.demo.running or not active)
        self.badge.set(run.state.value.capitalize(), TONES[run.state])
        self.message.setText(run.message)
        self.bar.setValue(round(run.fraction * 1000))
        self.plan_line.setText(run.plan_line(self.workbench.federation_metrics.plan))
        rows = sorted(run.rows.values(), key=lambda row: row.round)
        self.table.setRowCount(len(rows))
        for index, row in enumerate(rows):
            values = (str(row.round), _fmt(row.loss, 4), _fmt(row.dice_before), _fmt(row.dice_after),
                      _fmt(row.dice_global))
            for column, value in enumerate(values):
                self.table.setItem(index, column, QTableWidgetItem(value))


def _privacy_field(value: float, most: float, decimals: int, tip: str) -> QDoubleSpinBox:
    """A privacy number's field: from 0, so that PrivacySettings (not the field) says what is refused."""
    field = float_field(0, most, decimals, tooltip=tip)
    field.setValue(value)
    return field


def _float(text: str) -> float:
    """The number typed; NaN for anything else, which PrivacySettings refuses in its own words."""
    try:
        return float(text)
    except ValueError:
        return float("nan")


def _fmt(value: float | None, digits: int = 3) -> str:
    return "—" if value is None else f"{value:.{digits}f}"
