"""Server (federation operator): the server.toml form, Start and Stop of `fedseg server` in a child
process, and what the run folder's events say: state, round in progress, the sites, every site's numbers
per round, the plan in force and the global model. Logic lives in app.services.server_operator and
app.models.server; this page only shows it."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import Qt, QTimer
from PySide6.QtWidgets import (
    QAbstractItemView,
    QCheckBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QPlainTextEdit,
    QScrollArea,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from app.models.augmentation import AUGMENTATION_CAPTIONS
from app.models.server import ServerState
from app.qt.dialogs import ask, error_sentence, show_error
from app.qt.keys_dialog import REPLACE
from app.qt.widgets.common import (
    Card,
    MetricTile,
    Page,
    PathField,
    StatusCard,
    button,
    combo,
    float_field,
    hint,
    int_field,
    separator,
)
from app.qt.worker import run_in_background
from app.services.server_operator import (
    SERVER_TOML,
    ServerForm,
    ServerOperator,
    StartCheck,
    TlsForm,
    certificates_for_this_computer,
    check_start,
    comma_numbers,
    load_server_form,
    public_context_fingerprint,
    public_key_fingerprint,
    save_server_toml,
)
from app.services.workbench import Workbench
from federation.config import STRATEGIES, FederationSettings, ModelSettings
from federation.validation import ValidationLimits
from segmentation.errors import ConfigError, FedSegError
from segmentation.settings import AUGMENTATION_NAMES

POLL_MS = 500
ONLINE_MS = 10_000  # `flwr supernode list` takes a second or two of CPU: not more often
STOP = "Stop the server"
KEEP = "Keep it running in the background"
CONTINUE = "Continue the run"
STRATEGY_CAPTIONS = {"fedavg": "FedAvg", "fedprox": "FedProx (proximal term)"}
TONES = {ServerState.STOPPED: "", ServerState.STARTING: "warn", ServerState.WAITING: "running",
         ServerState.RUNNING: "running", ServerState.STOPPING: "warn", ServerState.FINISHED: "good",
         ServerState.FAILED: "bad"}


def _numbers_text(values: tuple | None) -> str:
    return ", ".join(f"{value:g}" for value in values) if values else ""


class ServerFormView(QWidget):
    """server.toml's tables as form cards; form() reads them (ConfigError for text that is not numbers),
    set_form() fills them. Ranges are only what a field can hold: the server's loader checks the rest."""

    def __init__(self) -> None:
        super().__init__()
        column = QVBoxLayout(self)
        column.setContentsMargins(0, 0, 0, 0)
        column.setSpacing(12)
        for card in (self._server_card(), self._security_card(), self._run_card(), self._model_card(),
                     self._validation_card()):
            column.addWidget(card)
        column.addStretch(1)

    def _server_card(self) -> Card:
        card = Card("Server")
        form = QFormLayout()
        self.host = QLineEdit()
        self.host.setToolTip("Interface the SuperLink listens on: 0.0.0.0 for every network of this computer")
        form.addRow("Listen on", self.host)
        self.port = int_field(1, 65535, "The one port sites connect to; open it to the sites only")
        form.addRow("Port", self.port)
        self.run_dir = PathField("folder", "The run folder", placeholder="checkpoints, metrics, the database")
        form.addRow("Run folder", self.run_dir)
        card.body.addLayout(form)
        return card

    def _security_card(self) -> Card:
        card = Card("Security")
        self.tls = QCheckBox("Encrypt the connections (TLS)")
        card.body.addWidget(self.tls)
        form = QFormLayout()
        self.ca = PathField("file", "The CA certificate", "Certificates (*.crt *.pem);;All (*)",
                            placeholder="empty: generated for this computer")
        form.addRow("CA certificate", self.ca)
        self.certificate = PathField("file", "The server certificate", "Certificates (*.pem *.crt);;All (*)")
        form.addRow("Certificate", self.certificate)
        self.private_key = PathField("file", "The server certificate's private key",
                                     "Keys (*.key *.pem);;All (*)")
        form.addRow("Private key", self.private_key)
        card.body.addLayout(form)
        self.generate = button("Generate for this computer")
        self.generate.setToolTip("Make a CA and a certificate for this computer's names in RUN/tls (kept if "
                                 "already there), so ca.crt can go to the sites before the server starts")
        card.body.addWidget(self.generate, 0, Qt.AlignmentFlag.AlignLeft)
        card.body.addWidget(QLabel("Sites' public keys (only these may join; none: any site with the CA)"))
        self.keys = QListWidget()
        self.keys.setSelectionMode(QAbstractItemView.SelectionMode.ExtendedSelection)
        self.keys.setFixedHeight(96)
        card.body.addWidget(self.keys)
        row = QHBoxLayout()
        self.add_key = button("Add…")
        self.add_key.clicked.connect(self.choose_keys)
        self.remove_key = button("Remove")
        self.remove_key.clicked.connect(self.remove_keys)
        row.addWidget(self.add_key)
        row.addWidget(self.remove_key)
        row.addStretch(1)
        card.body.addLayout(row)
        he = QFormLayout()
        self.he = PathField("file", "The HE public context", "HE contexts (*.ctx);;All (*)",
                            placeholder="optional: public.ctx (never secret.ctx)")
        self.he.changed.connect(self._he_changed)
        he.addRow("HE public context", self.he)
        self.he_fingerprint = QLabel("—")
        self.he_fingerprint.setObjectName("Muted")
        he.addRow("HE fingerprint", self.he_fingerprint)
        card.body.addLayout(he)
        card.body.addWidget(hint("Compare each fingerprint with the one the site shows for its own key."))
        return card

    def _run_card(self) -> Card:
        card = Card("Rounds")
        form = QFormLayout()
        self.rounds = int_field(1, 10_000)
        form.addRow("Rounds", self.rounds)
        self.min_sites = int_field(1, 1000, "A round starts when this many sites are connected")
        form.addRow("Sites needed", self.min_sites)
        self.local_epochs = int_field(1, 1000, "Epochs each site trains per round")
        form.addRow("Local epochs", self.local_epochs)
        self.personalise_epochs = int_field(
            0, 1000, "After the last round each site fine-tunes the global model on its own data for this "
                     "many epochs and keeps it as its personalised model (0: none)")
        form.addRow("Personalise epochs", self.personalise_epochs)
        self.fraction = float_field(0.01, 1.0, 2, 0.05,
                                    "Share of the connected sites asked to train each round")
        form.addRow("Sites per round", self.fraction)
        self.strategy = combo([(name, STRATEGY_CAPTIONS[name]) for name in STRATEGIES])
        self.strategy.currentIndexChanged.connect(self._strategy_changed)
        form.addRow("Aggregation", self.strategy)
        self.proximal_mu = float_field(0.0, 100.0, 4, 0.001, "FedProx's proximal term weight (above 0)")
        form.addRow("Proximal μ", self.proximal_mu)
        self.min_valid_replies = int_field(1, 1000, "Fewer valid replies than this: the global model stays")
        form.addRow("Valid replies needed", self.min_valid_replies)
        self.round_timeout = float_field(1.0, 86_400.0, 0, 10.0,
                                         "Seconds to wait for replies; late sites miss the round")
        self.round_timeout.setSuffix(" s")
        form.addRow("Round timeout", self.round_timeout)
        self.augmentation = combo([(name, AUGMENTATION_CAPTIONS[name]) for name in AUGMENTATION_NAMES])
        form.addRow("Augmentation", self.augmentation)
        self.augmentation_probability = float_field(0.0, 1.0, 2, 0.05, "Share of each batch augmented")
        form.addRow("Augmented share", self.augmentation_probability)
        self.share_site_metrics = QCheckBox("Send every site's numbers back to all sites")
        form.addRow("", self.share_site_metrics)
        card.body.addLayout(form)
        return card

    def _model_card(self) -> Card:
        card = Card("Model")
        form = QFormLayout()
        self.labels = QLineEdit()
        self.labels.setToolTip("Label names by value, background first; every site's dataset must have these")
        form.addRow("Labels", self.labels)
        self.channels = QLineEdit()
        self.channels.setToolTip("U-Net widths per level")
        form.addRow("U-Net widths", self.channels)
        self.batch_size = int_field(1, 4096)
        form.addRow("Batch size", self.batch_size)
        self.learning_rate = float_field(0.000001, 1.0, 6, 0.0001)
        form.addRow("Learning rate", self.learning_rate)
        self.target_spacing = QLineEdit()
        self.target_spacing.setPlaceholderText("automatic (the plan); or x, y, z in mm")
        form.addRow("Target spacing", self.target_spacing)
        self.patch_size = QLineEdit()
        self.patch_size.setPlaceholderText("automatic (the plan); or rows, columns")
        form.addRow("Patch size", self.patch_size)
        card.body.addLayout(form)
        return card

    def _validation_card(self) -> Card:
        card = Card("Reply checks")
        form = QFormLayout()
        self.max_num_examples = float_field(1.0, 1e12, 0, 1000.0, "A reply claiming more examples is dropped")
        form.addRow("Most examples", self.max_num_examples)
        self.norm_outlier_k = float_field(0.01, 1000.0, 2, 0.5,
                                          "Drop an update whose norm is above median + k × spread")
        form.addRow("Outlier k", self.norm_outlier_k)
        self.norm_min_spread = float_field(0.0, 100.0, 2, 0.05,
                                           "The spread is at least this share of the median")
        form.addRow("Least spread", self.norm_min_spread)
        card.body.addLayout(form)
        return card

    # -- the sites' keys and the HE context ------------------------------------------------------
    def choose_keys(self) -> None:
        chosen, _ = QFileDialog.getOpenFileNames(self, "The sites' public keys", str(Path.home()),
                                                 "Public keys (*.pub);;All files (*)")
        for path in chosen:
            self.add_site_key(path)

    def add_site_key(self, path: str) -> None:
        """List a site's public key with its fingerprint (or why it cannot be used); once."""
        if path in self.site_keys():
            return
        try:
            shown = public_key_fingerprint(Path(path))
        except FedSegError as error:
            shown = f"not usable: {error}"
        item = QListWidgetItem(f"{Path(path).name}    {shown}")
        item.setData(Qt.ItemDataRole.UserRole, path)
        item.setToolTip(path)
        self.keys.addItem(item)

    def remove_keys(self) -> None:
        for item in self.keys.selectedItems():
            self.keys.takeItem(self.keys.row(item))

    def site_keys(self) -> tuple[str, ...]:
        return tuple(self.keys.item(row).data(Qt.ItemDataRole.UserRole) for row in range(self.keys.count()))

    def _he_changed(self, text: str) -> None:
        if not text.strip():
            self.he_fingerprint.setText("—")
            return
        try:
            self.he_fingerprint.setText(public_context_fingerprint(Path(text.strip()).expanduser()))
        except FedSegError as error:
            self.he_fingerprint.setText(f"not usable: {error}")

    def _strategy_changed(self) -> None:
        self.proximal_mu.setEnabled(self.strategy.currentData() == "fedprox")

    # -- form <-> widgets ------------------------------------------------------------------------
    def form(self) -> ServerForm:
        labels = tuple(part.strip() for part in self.labels.text().split(",") if part.strip())
        return ServerForm(
            host=self.host.text().strip(), fleet_port=self.port.value(), run_dir=str(self.run_dir.path or ""),
            federation=FederationSettings(
                rounds=self.rounds.value(), min_sites=self.min_sites.value(), fraction=self.fraction.value(),
                strategy=self.strategy.currentData(), proximal_mu=self.proximal_mu.value(),
                round_timeout=self.round_timeout.value(), local_epochs=self.local_epochs.value(),
                personalise_epochs=self.personalise_epochs.value(),
                augmentation=self.augmentation.currentData(),
                augmentation_probability=self.augmentation_probability.value(),
                share_site_metrics=self.share_site_metrics.isChecked(),
                min_valid_replies=self.min_valid_replies.value(),
            ),
            model=ModelSettings(
                labels=labels,
                channels=comma_numbers(self.channels.text(), "the U-Net widths", integers=True),
                batch_size=self.batch_size.value(), learning_rate=self.learning_rate.value(),
                target_spacing=comma_numbers(self.target_spacing.text(), "the target spacing") or None,
                patch_size=comma_numbers(self.patch_size.text(), "the patch size", integers=True) or None,
            ),
            validation=ValidationLimits(self.max_num_examples.value(), self.norm_outlier_k.value(),
                                        self.norm_min_spread.value()),
            tls=TlsForm(self.tls.isChecked(), *(str(field.path or "") for field in
                                                (self.ca, self.certificate, self.private_key))),
            site_public_keys=self.site_keys(),
            he_public_context=str(self.he.path or ""),
        )

    def set_form(self, form: ServerForm) -> None:
        federation, model, validation = form.federation, form.model, form.validation
        self.host.setText(form.host)
        self.port.setValue(form.fleet_port)
        self.run_dir.set_path(form.run_dir or None)
        self.tls.setChecked(form.tls.enabled)
        self.set_certificates(form.tls)
        self.keys.clear()
        for path in form.site_public_keys:
            self.add_site_key(path)
        self.he.set_path(form.he_public_context or None)
        self.rounds.setValue(federation.rounds)
        self.min_sites.setValue(federation.min_sites)
        self.local_epochs.setValue(federation.local_epochs)
        self.personalise_epochs.setValue(federation.personalise_epochs)
        self.fraction.setValue(federation.fraction)
        self.strategy.setCurrentIndex(max(self.strategy.findData(federation.strategy), 0))
        self.proximal_mu.setValue(federation.proximal_mu)
        self._strategy_changed()
        self.min_valid_replies.setValue(federation.min_valid_replies)
        self.round_timeout.setValue(federation.round_timeout)
        self.augmentation.setCurrentIndex(max(self.augmentation.findData(federation.augmentation), 0))
        self.augmentation_probability.setValue(federation.augmentation_probability)
        self.share_site_metrics.setChecked(federation.share_site_metrics)
        self.labels.setText(", ".join(model.labels))
        self.channels.setText(", ".join(map(str, model.channels)))
        self.batch_size.setValue(model.batch_size)
        self.learning_rate.setValue(model.learning_rate)
        self.target_spacing.setText(_numbers_text(model.target_spacing))
        self.patch_size.setText(_numbers_text(model.patch_size))
        self.max_num_examples.setValue(validation.max_num_examples)
        self.norm_outlier_k.setValue(validation.norm_outlier_k)
        self.norm_min_spread.setValue(validation.norm_min_spread)

    def set_certificates(self, tls: TlsForm) -> None:
        self.ca.set_path(tls.ca_certificate or None)
        self.certificate.set_path(tls.certificate or None)
        self.private_key.set_path(tls.private_key or None)


class ServerPage(Page):
    def __init__(self, workbench: Workbench, shell) -> None:
        super().__init__("Server", "Run the federation's server on this computer and watch the rounds. The "
                         "server holds no secret key: sites' public keys and the public HE context only.")
        self.workbench, self.shell = workbench, shell
        self.operator = ServerOperator()
        self.path = workbench.settings.workspace_dir / "server" / SERVER_TOML
        self.own_file = False  # self.path was opened or saved here: Save replaces it without asking
        self.keep_running = False  # the operator chose to leave the server running when the window closes
        self.checking_online = False
        self.timer = QTimer(self)
        self.timer.setInterval(POLL_MS)
        self.timer.timeout.connect(self.poll)
        self.online_timer = QTimer(self)
        self.online_timer.setInterval(ONLINE_MS)
        self.online_timer.timeout.connect(self.check_online)
        self.content.addLayout(self._toolbar())
        row = QHBoxLayout()
        row.setSpacing(12)
        self.fields = ServerFormView()
        self.fields.set_form(ServerForm())
        self.fields.generate.clicked.connect(self.generate_certificates)
        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        scroll.setWidget(self.fields)
        scroll.setFixedWidth(500)
        row.addWidget(scroll)
        right = QVBoxLayout()
        right.setSpacing(12)
        right.addWidget(self._status_card())
        right.addWidget(self._sites_card(), 1)
        right.addWidget(self._records_card(), 1)
        right.addWidget(self._costs_card(), 1)
        log = Card("Server log")
        self.log = QPlainTextEdit()
        self.log.setObjectName("Log")
        self.log.setReadOnly(True)
        self.log.setPlaceholderText("The server process writes here once it starts.")
        log.body.addWidget(self.log)
        right.addWidget(log, 1)
        row.addLayout(right, 1)
        self.content.addLayout(row, 1)
        self.operator.run.changed.connect(self.refresh)
        if self.path.is_file():
            self.open_file(self.path)
        self.refresh()

    @property
    def job(self):
        """The server process this page started (None before Start)."""
        return self.operator.job

    def _toolbar(self) -> QHBoxLayout:
        bar = QHBoxLayout()
        self.file_label = hint("")
        bar.addWidget(self.file_label, 1)
        self.open_button = button("Open…", "file")
        self.open_button.clicked.connect(self.choose_file)
        self.save_button = button("Save")
        self.save_button.clicked.connect(lambda: self.save())
        self.save_as_button = button("Save as…")
        self.save_as_button.clicked.connect(self.save_as)
        self.start_button = button("Start", "play", primary=True)
        self.start_button.clicked.connect(lambda: self.save(start=True))
        self.stop_button = button("Stop", "stop", object_name="Danger")
        self.stop_button.clicked.connect(self.operator.stop)
        self.metrics_button = button("Show on Metrics", "metrics")
        self.metrics_button.clicked.connect(self.show_metrics)
        for widget in (self.open_button, self.save_button, self.save_as_button, separator(),
                       self.start_button, self.stop_button, self.metrics_button):
            bar.addWidget(widget)
        return bar

    def _status_card(self) -> Card:
        card = StatusCard("Status", "Not running")
        self.badge, self.message, self.bar = card.badge, card.message, card.bar
        tiles = QHBoxLayout()
        self.tile_round = MetricTile("round in progress")
        self.tile_online = MetricTile("sites online")
        self.tile_model = MetricTile("rounds saved")
        for tile in (self.tile_round, self.tile_online, self.tile_model):
            tiles.addWidget(tile, 1)
        card.body.addLayout(tiles)
        self.plan_line = hint("")
        self.plan_line.setToolTip("The plan every site trains and predicts with (target spacing, patch size)")
        card.body.addWidget(self.plan_line)
        self.model_line = hint("")
        card.body.addWidget(self.model_line)
        return card

    def _sites_card(self) -> Card:
        card = Card("Sites")
        self.sites = self._table(["Site", "Last answer", "Status", "Dice"])
        card.body.addWidget(self.sites, 1)
        return card

    def _records_card(self) -> Card:
        card = Card("Every site, every round")
        self.records = self._table([])
        self.records.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        card.body.addWidget(self.records, 1)
        return card

    def _costs_card(self) -> Card:
        card = Card("What each round cost")
        card.body.addWidget(hint("Seconds (\"-\": unknown) and each site's part with its array KiB in (its "
                                 "reply) / out (the round's message to it)"))
        self.costs = self._table([])
        self.costs.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        card.body.addWidget(self.costs, 1)
        return card

    @staticmethod
    def _table(header: list[str]) -> QTableWidget:
        table = QTableWidget(0, len(header))
        table.setHorizontalHeaderLabels(header)
        table.verticalHeader().hide()
        table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        table.setAlternatingRowColors(True)
        table.setShowGrid(False)
        table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Stretch)
        return table

    # -- the file --------------------------------------------------------------------------------
    def choose_file(self) -> None:
        chosen, _ = QFileDialog.getOpenFileName(self, "Open the server settings", str(self.path.parent),
                                                "TOML (*.toml);;All files (*)")
        if chosen:
            self.open_file(Path(chosen))

    def open_file(self, path: Path) -> None:
        """Fill the form from a server.toml (read off the GUI thread: the loader checks everything)."""
        self.file_label.setText(f"Reading {path}…")
        run_in_background(self, lambda _report: load_server_form(path),
                          lambda form: self._opened(path, form),
                          lambda error: self._failed("Could not open the server settings", error,
                                                     "opening the server settings"))

    def _opened(self, path: Path, form: ServerForm) -> None:
        self.fields.set_form(form)
        self.path, self.own_file = path, True
        self.refresh()

    def save(self, start: bool = False) -> None:
        """Save the form to the current file (asking before replacing one this page did not write), then
        with `start` start the server with it."""
        replace = self.own_file
        if self.path.exists() and not self.own_file:
            text = f"{self.path} already exists. Replace it? The old file is kept under a new name."
            if ask(self, "Replace the server settings?", text, (REPLACE,)) != REPLACE:
                return
            replace = True
        self._write(self.path, replace, start)

    def save_as(self) -> None:
        chosen, _ = QFileDialog.getSaveFileName(self, "Save the server settings as", str(self.path),
                                                "TOML (*.toml)")
        if chosen:  # the file dialog asked before replacing; the old file is kept under a new name
            self._write(Path(chosen), True, False)

    def _write(self, path: Path, replace: bool, start: bool) -> None:
        try:
            form = self.fields.form()
        except (FedSegError, ValueError) as error:
            show_error(self, "Could not save the server settings", error, "reading the form")
            return
        self._set_busy(True)
        self.file_label.setText(f"Checking and saving {path}…")

        def work(_report) -> StartCheck | None:
            save_server_toml(form, path, replace)
            return check_start(path) if start else None

        run_in_background(self, work, lambda check: self._saved(path, check),
                          lambda error: self._failed("Could not save the server settings", error,
                                                     "saving the server settings"))

    def _saved(self, path: Path, check: StartCheck | None) -> None:
        self._set_busy(False)
        self.path, self.own_file = path, True
        self.refresh()
        if check is not None:
            self._start(check)

    def _failed(self, title: str, error: BaseException, action: str) -> None:
        self._set_busy(False)
        self.refresh()
        show_error(self, title, error, action)

    def _set_busy(self, busy: bool) -> None:
        for widget in (self.save_button, self.save_as_button, self.open_button, self.start_button):
            widget.setEnabled(not busy)

    def generate_certificates(self) -> None:
        """Fill the TLS fields with certificates for this computer in RUN/tls (made now if not there)."""
        try:
            tls = certificates_for_this_computer(self.path, self.fields.run_dir.edit.text().strip(),
                                                 self.fields.host.text().strip())
        except OSError as error:
            show_error(self, "Could not make the certificates", error, "making the certificates")
            return
        self.fields.tls.setChecked(True)
        self.fields.set_certificates(tls)
        self.shell.show_status("Certificates for this computer are ready; give the sites "
                               f"{tls.ca_certificate}")

    # -- the server ------------------------------------------------------------------------------
    def _start(self, check: StartCheck) -> None:
        resume = bool(check.existing_run)
        if resume:
            text = f"{error_sentence(ConfigError(check.existing_run), '')} Continue it from its last " \
                   "saved round?"
            if ask(self, "The run folder holds a run", text, (CONTINUE,)) != CONTINUE:
                return
        try:
            self.operator.start(check.config, resume)
        except (FedSegError, OSError) as error:
            show_error(self, "Could not start the server", error, "starting the server")
            return
        self.log.clear()
        self.timer.start()
        self.online_timer.start()

    def poll(self) -> None:
        failure = self.operator.poll()
        job = self.operator.job
        if job is not None:
            self.log.setPlainText(job.log_tail(60))
            self.log.verticalScrollBar().setValue(self.log.verticalScrollBar().maximum())
        if failure is not None:
            show_error(self, "The server stopped", ConfigError(failure))
        if not self.operator.running and not self.operator.run.state.active:
            self.timer.stop()
            self.online_timer.stop()

    def check_online(self) -> None:
        """Ask the SuperLink how many sites are online (off the GUI thread, one question at a time)."""
        if self.checking_online or self.operator.run.state not in (ServerState.WAITING, ServerState.RUNNING):
            return
        self.checking_online = True
        run_in_background(self, lambda _report: self.operator.online_sites(), self._online,
                          lambda _error: self._online(None))

    def _online(self, count: int | None) -> None:
        self.checking_online = False
        if self.operator.run.state.active:
            self.operator.run.set_online(count)

    def show_metrics(self) -> None:
        """Follow the run's events on the Metrics page (its charts and CSV export)."""
        if self.operator.job is not None:
            self.shell.page("metrics").follow_file(self.operator.job.events_path)
            self.shell.navigate("metrics")

    def confirm_close(self) -> bool:
        """The window is closing: while the server runs, ask whether to stop it, keep it running in the
        background, or not close; False keeps the window open."""
        self.keep_running = False
        if not self.operator.running:
            return True
        text = ("The federation server is still running. Stop it (the run can be continued later), or "
                "keep it running in the background after the workbench closes?")
        choice = ask(self, "The server is running", text, (STOP, KEEP))
        self.keep_running = choice == KEEP
        return choice is not None

    def shutdown(self) -> None:
        self.operator.close(keep_running=self.keep_running)

    # -- view ----------------------------------------------------------------------------------
    def refresh(self) -> None:
        run = self.operator.run
        active = run.state.active
        self.fields.setEnabled(not active)
        for widget in (self.open_button, self.save_button, self.save_as_button, self.start_button):
            widget.setEnabled(not active)
        self.stop_button.setEnabled(active and run.state is not ServerState.STOPPING)
        self.metrics_button.setEnabled(self.operator.job is not None)
        self.file_label.setText(str(self.path) + ("" if self.own_file or not self.path.exists() else
                                                  " (exists: Save asks before replacing it)"))
        self.badge.set(run.state.value.capitalize(), TONES[run.state])
        self.message.setText(run.message)
        self.bar.setValue(round(run.fraction * 1000))
        self.tile_round.set(f"{run.round_in_progress} / {run.rounds}" if run.round_in_progress else "—")
        self.tile_online.set("—" if run.online is None else str(run.online))
        self.tile_model.set(f"{run.completed} / {run.rounds}" if run.rounds else "—")
        self.plan_line.setText(run.metrics.plan_line() or "Plan: made from the sites' fingerprints before "
                                                          "round 1")
        model = self.operator.model_path
        self.model_line.setText(f"Global model: {model} (round {run.completed})" if model else
                                "Global model: none saved yet")
        dice = {site: points[-1][1] for site, points in run.metrics.dice_by_site().items()}
        rows = [[site.name, f"round {site.round}" if site.round else "planning", site.status,
                 f"{dice[site.name]:.3f}" if site.name in dice else "—"] for site in run.sites()]
        _fill(self.sites, rows)
        _fill_with_header(self.records, *run.metrics.table())
        _fill_with_header(self.costs, *run.cost_table())


def _fill_with_header(table: QTableWidget, header: list[str], rows: list[list[str]]) -> None:
    table.setColumnCount(len(header))
    table.setHorizontalHeaderLabels(header)
    _fill(table, rows)


def _fill(table: QTableWidget, rows: list[list[str]]) -> None:
    table.setRowCount(len(rows))
    for index, row in enumerate(rows):
        for column, value in enumerate(row):
            table.setItem(index, column, QTableWidgetItem(value))
