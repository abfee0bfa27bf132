"""Local training: settings, the plan in force (automatic, or an expert's spacing and patch size),
start/stop/resume of `fedseg train` in a child process, live progress and curves from its events
(through app.services.training_job and app.models.training)."""

from __future__ import annotations

from pathlib import Path

from matplotlib.ticker import MaxNLocator
from PySide6.QtCore import Qt, QTimer
from PySide6.QtWidgets import (
    QDoubleSpinBox,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPlainTextEdit,
    QSpinBox,
    QVBoxLayout,
)

from app.commands.train import AUGMENTATION_CHOICES
from app.models.augmentation import AUGMENTATION_CAPTIONS
from app.models.colors import label_color
from app.models.training import JobState, TrainingRunModel
from app.qt.dialogs import show_error
from app.qt.widgets.common import Card, MetricTile, Page, PathField, StatusCard, button, combo, hint
from app.qt.widgets.plots import Canvas, rgb_to_mpl, style_axes, style_legend
from app.services.training_job import (
    SPACING_AXES,
    PlanOverride,
    RunPlan,
    TrainingLength,
    TrainingRequest,
    TrainingSession,
    can_resume,
    dataset_slices,
)
from app.services.workbench import Workbench
from segmentation.errors import ConfigError, FedSegError
from segmentation.settings import FEDGIN_CHANNELS

POLL_MS = 300
REDRAW_MS = 400  # the curves are redrawn at most this often (a redraw costs tens of milliseconds)
# What the override fields hold until an expert changes them (a common CT in-plane grid).
OVERRIDE_SPACING = (1.0, 1.0, 2.5)
OVERRIDE_PATCH = (128, 128)
MAX_SPACING_MM = 50.0
MAX_PATCH_SIDE = 2048
STATE_TONES = {JobState.IDLE: "", JobState.STARTING: "running", JobState.RUNNING: "running",
               JobState.STOPPING: "warn", JobState.FINISHED: "good", JobState.STOPPED: "warn",
               JobState.FAILED: "bad"}


class TrainingCurves(Canvas):
    """Loss (per step and per epoch) and validation Dice (mean and per label) against epochs."""

    def __init__(self) -> None:
        super().__init__(columns=2)
        self.loss_axes, self.dice_axes = self.axes

    def plot(self, model: TrainingRunModel) -> None:
        curves = self.loss_axes, self.dice_axes
        for axes in curves:
            axes.clear()
        style_axes(self.loss_axes, "Training loss", "epoch", "Dice + CE loss")
        style_axes(self.dice_axes, "Validation Dice", "epoch", "Dice")
        data = model.curves
        if data.step_loss:
            x, y = zip(*data.step_loss, strict=True)
            self.loss_axes.plot(x, y, color=rgb_to_mpl((80, 160, 245)), alpha=0.35, linewidth=1, label="step")
        if data.epoch_loss:
            x, y = zip(*data.epoch_loss, strict=True)
            self.loss_axes.plot(x, y, color=rgb_to_mpl((80, 160, 245)), marker="o", markersize=3,
                                linewidth=1.8, label="epoch")
        for value, (name, points) in enumerate(data.label_dice.items(), start=1):
            x, y = zip(*points, strict=True)
            self.dice_axes.plot(x, y, color=rgb_to_mpl(label_color(value)), linewidth=1.4, marker="o",
                                markersize=2.5, label=name)
        if data.mean_dice:
            x, y = zip(*data.mean_dice, strict=True)
            self.dice_axes.plot(x, y, color="white", linewidth=2, linestyle="--", label="mean")
        self.dice_axes.set_ylim(0, 1)
        for axes in curves:
            axes.set_xlim(left=0, right=max(model.epochs, 1))
            axes.xaxis.set_major_locator(MaxNLocator(integer=True))
        style_legend(self.loss_axes)
        style_legend(self.dice_axes)
        self.draw_idle()


class TrainingPage(Page):
    def __init__(self, workbench: Workbench, shell) -> None:
        super().__init__("Local training", "Train this site's model on its own dataset. Training runs in "
                         "its own process: keep working while it runs, stop it at any time and resume later.")
        self.workbench, self.shell = workbench, shell
        self.model = workbench.training
        self.session = TrainingSession(self.model)
        self.run_plan = RunPlan()
        self.slices: int | None = None  # the chosen dataset's training slices, while known
        self.timer = QTimer(self)
        self.timer.setInterval(POLL_MS)
        self.timer.timeout.connect(self.poll)
        row = QHBoxLayout()
        row.setSpacing(12)
        row.addWidget(self._settings_card())
        right = QVBoxLayout()
        right.setSpacing(12)
        right.addWidget(self._progress_card())
        curves = Card("Curves")
        self.curves = TrainingCurves()
        curves.body.addWidget(self.curves, 1)
        right.addWidget(curves, 1)
        row.addLayout(right, 1)
        self.content.addLayout(row, 1)
        self.redraw = QTimer(self)  # curves follow the model's changes, throttled; typing never redraws them
        self.redraw.setSingleShot(True)
        self.redraw.setInterval(REDRAW_MS)
        self.redraw.timeout.connect(lambda: self.curves.plot(self.model))
        self.model.changed.connect(self._model_changed)
        self._load_defaults()
        self.refresh()
        self.curves.plot(self.model)

    # -- layout ------------------------------------------------------------------------------
    def _settings_card(self) -> Card:
        card = Card("Settings")
        card.setFixedWidth(400)
        form = QFormLayout()
        form.setSpacing(10)
        self.data = PathField("folder", "Choose a dataset folder", placeholder="folder with dataset.json")
        self.data.changed.connect(self._data_changed)
        form.addRow("Dataset", self.data)
        self.out = PathField("folder", "Choose a run folder", placeholder="where model.pt and curves go")
        self.out.changed.connect(lambda _: self.refresh())
        form.addRow("Run folder", self.out)
        self.augmentation = combo([(name, AUGMENTATION_CAPTIONS[name]) for name in AUGMENTATION_CHOICES])
        form.addRow("Augmentation", self.augmentation)
        self.epochs = QSpinBox()
        self.epochs.setRange(1, 10_000)
        self.epochs.setToolTip("Proposed for each dataset from the length of your last run in steps; an "
                               "epoch is a pass over every slice of every training case")
        self.epochs.valueChanged.connect(self._show_length)
        self.length_note = QLabel()
        self.length_note.setObjectName("Muted")
        self.length_note.setWordWrap(True)
        epochs = QVBoxLayout()
        epochs.setSpacing(2)
        epochs.addWidget(self.epochs)
        epochs.addWidget(self.length_note)
        form.addRow("Epochs", epochs)
        self.learning_rate = QDoubleSpinBox()
        self.learning_rate.setDecimals(5)
        self.learning_rate.setRange(0.00001, 1.0)
        self.learning_rate.setSingleStep(0.0001)
        form.addRow("Learning rate", self.learning_rate)
        self.batch_size = QSpinBox()
        self.batch_size.setRange(1, 512)
        self.batch_size.valueChanged.connect(self._show_length)
        form.addRow("Batch size", self.batch_size)
        self.channels = QLineEdit(",".join(map(str, FEDGIN_CHANNELS)))
        self.channels.setToolTip("U-Net feature channels per level (the method's FedGIN widths by default)")
        form.addRow("U-Net widths", self.channels)
        self.plan = QLabel()
        self.plan.setObjectName("Muted")
        self.plan.setWordWrap(True)
        self.plan.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.plan.setToolTip("Target spacing and patch size: made from the training data when the run "
                             "starts, kept in the run folder's plan.json")
        form.addRow("Plan", self.plan)
        card.body.addLayout(form)
        card.body.addWidget(self._override_box())
        card.body.addWidget(hint("GIN teaches the model to ignore intensity, so a CT-trained model also "
                                 "segments MR. The plan is made from the training data when a run starts. "
                                 "Resume continues the run folder's model, with its plan, up to the epochs "
                                 "set above."))
        card.body.addStretch(1)
        buttons = QHBoxLayout()
        self.start = button("Start", "play", primary=True)
        self.start.clicked.connect(lambda: self.begin(resume=False))
        self.resume = button("Resume", "resume")
        self.resume.clicked.connect(lambda: self.begin(resume=True))
        self.stop = button("Stop", "stop", object_name="Danger")
        self.stop.clicked.connect(self.request_stop)
        for widget in (self.start, self.resume, self.stop):
            buttons.addWidget(widget)
        card.body.addLayout(buttons)
        return card

    def _override_box(self) -> QGroupBox:
        """Expert override of the automatic plan: target spacing (mm) and patch size, off by default."""
        box = QGroupBox("Override plan")
        box.setCheckable(True)
        box.setChecked(False)
        box.setToolTip("Use this spacing and patch size instead of the ones planned from the data")
        form = QFormLayout(box)
        form.setRowWrapPolicy(QFormLayout.RowWrapPolicy.WrapAllRows)  # each row's fields get the full width
        row = QHBoxLayout()
        self.spacing: list[QDoubleSpinBox] = []
        for axis, value in zip(SPACING_AXES, OVERRIDE_SPACING, strict=True):
            field = QDoubleSpinBox()
            field.setPrefix(f"{axis} ")
            field.setSuffix(" mm")
            field.setDecimals(2)
            field.setRange(0.0, MAX_SPACING_MM)
            field.setSingleStep(0.1)
            field.setValue(value)
            row.addWidget(field)
            self.spacing.append(field)
        self.spacing[2].setToolTip("2D training keeps each study's own slice spacing; Z is recorded only")
        form.addRow("Target spacing", row)
        sides = QHBoxLayout()
        self.patch: list[QSpinBox] = []
        for caption, value in zip(("rows", "columns"), OVERRIDE_PATCH, strict=True):
            field = QSpinBox()
            field.setRange(0, MAX_PATCH_SIDE)
            field.setSingleStep(16)
            field.setValue(value)
            field.setSuffix(" px")
            field.setToolTip(f"patch {caption}: a multiple of 2^(levels-1) of the U-Net widths")
            sides.addWidget(field)
            self.patch.append(field)
        form.addRow("Patch size (rows × columns)", sides)
        self.override = box
        return box

    def _progress_card(self) -> Card:
        card = StatusCard("Progress", "Idle")
        self.badge, self.message, self.bar = card.badge, card.message, card.bar
        tiles = QHBoxLayout()
        self.tile_epoch = MetricTile("epoch")
        self.tile_loss = MetricTile("loss")
        self.tile_dice = MetricTile("validation Dice")
        self.tile_eta = MetricTile("time left")
        self.tile_eta.setToolTip("From this session's time per step and per epoch end (validation and "
                                 "checkpoint); '~' marks a first estimate from the steps alone, until an "
                                 "epoch has ended")
        for tile in (self.tile_epoch, self.tile_loss, self.tile_dice, self.tile_eta):
            tiles.addWidget(tile, 1)
        card.body.addLayout(tiles)
        self.log = QPlainTextEdit()
        self.log.setObjectName("Log")
        self.log.setReadOnly(True)
        self.log.setFixedHeight(74)
        self.log.setPlaceholderText("The training process's messages appear here.")
        card.body.addWidget(self.log)
        return card

    def _load_defaults(self) -> None:
        defaults = self.workbench.settings.training
        self.augmentation.setCurrentIndex(max(self.augmentation.findData(defaults.augmentation), 0))
        self.learning_rate.setValue(defaults.learning_rate)
        self.batch_size.setValue(defaults.batch_size)
        recent = self.workbench.settings.recent_datasets
        if recent:
            self.set_dataset(Path(recent[0]))

    # -- actions -----------------------------------------------------------------------------
    def set_dataset(self, folder: Path) -> None:
        self.data.set_path(folder)

    def _data_changed(self, text: str) -> None:
        """A new dataset: a run folder named after it, and the epochs nearest to the remembered length in
        steps on it (the epochs stay as they are while its size is unknown)."""
        if text.strip():
            name = Path(text.strip()).name or "run"
            self.out.set_path(self.workbench.settings.workspace_dir / "runs" / name)
        self.slices = dataset_slices(self.data.path)
        length = self.length()
        if length is not None:
            self.epochs.setValue(length.nearest(self.workbench.settings.training.steps).epochs)
        self._show_length()
        self.refresh()

    def length(self) -> TrainingLength | None:
        """The epochs set, in steps of the chosen dataset (None while its size is unknown)."""
        if self.slices is None:
            return None
        return TrainingLength.of(self.epochs.value(), self.slices, self.batch_size.value())

    def _show_length(self) -> None:
        length = self.length()
        self.length_note.setText(length.describe() if length is not None else "")

    def request(self, resume: bool) -> TrainingRequest:
        if self.data.path is None or self.out.path is None:
            raise ConfigError("choose a dataset folder and a run folder first")
        try:
            channels = tuple(int(part) for part in self.channels.text().split(","))
        except ValueError:
            raise ConfigError(f"U-Net widths must be comma-separated integers like 32,64,128,256, "
                              f"not {self.channels.text()!r}") from None
        return TrainingRequest(
            data=self.data.path, out=self.out.path, epochs=self.epochs.value(),
            augmentation=self.augmentation.currentData(), learning_rate=self.learning_rate.value(),
            batch_size=self.batch_size.value(), channels=channels, resume=resume,
            plan_override=self.plan_override() if not resume else None,
        )

    def plan_override(self) -> PlanOverride | None:
        """The override group's values when it is checked (checked by the request, not here)."""
        if not self.override.isChecked():
            return None
        spacing = tuple(field.value() for field in self.spacing)
        return PlanOverride(spacing, tuple(field.value() for field in self.patch))  # type: ignore[arg-type]

    def begin(self, resume: bool) -> None:
        """Start (or resume) training in a child process; problems found at once become a dialog."""
        try:
            request = self.request(resume)
            self.session.begin(request)
        except (FedSegError, OSError) as error:
            show_error(self, "Could not start training", error, "starting training")
            return
        self._remember(request)
        self.log.clear()
        self.timer.start()

    def request_stop(self) -> None:
        self.session.stop()

    def poll(self) -> None:
        """Read new events and, once the child has exited, its outcome."""
        job = self.session.job
        if job is None:
            return
        failure = self.session.poll()
        self.log.setPlainText(job.log_tail(12))
        self.log.verticalScrollBar().setValue(self.log.verticalScrollBar().maximum())
        if self.session.active:
            return
        self.timer.stop()
        self.workbench.settings.last_checkpoint = str(self.session.checkpoint)
        self.workbench.save()
        self.refresh()
        if failure:
            show_error(self, "Training failed", ConfigError(failure))

    def shutdown(self) -> None:
        """The window is closing: ask a running job to save and stop (it finishes on its own)."""
        self.session.stop()

    def _remember(self, request: TrainingRequest) -> None:
        defaults = self.workbench.settings.training
        length = self.length()
        if length is not None:
            defaults.steps = length.steps
        defaults.augmentation = request.augmentation
        defaults.learning_rate, defaults.batch_size = request.learning_rate, request.batch_size
        self.workbench.remember_dataset(request.data)

    # -- view ----------------------------------------------------------------------------------
    def refresh(self) -> None:
        model = self.model
        active = model.state.active
        out = self.out.path
        self.start.setEnabled(not active and self.data.path is not None)
        self.resume.setEnabled(not active and out is not None and can_resume(out))
        self.stop.setEnabled(active and model.state is not JobState.STOPPING)
        for widget in (self.data, self.out, self.augmentation, self.channels):
            widget.setEnabled(not active)
        # A run folder with a model keeps its plan (Resume); Start would refuse it anyway.
        self.override.setEnabled(not active and not (out is not None and can_resume(out)))
        job = self.session.job
        started = job is not None and job.request.out == out
        self.plan.setText(self.run_plan.describe(out, started))
        self.badge.set(model.state.value.capitalize(), STATE_TONES[model.state])
        self.message.setText(model.message)
        self.bar.setValue(round(model.fraction * 1000))
        self.tile_epoch.set(f"{model.epoch} / {model.epochs}" if model.epochs else "—")
        self.tile_loss.set(f"{model.loss:.4f}" if model.loss is not None else "—")
        self.tile_dice.set(f"{model.dice:.3f}" if model.dice is not None else "—")
        self.tile_eta.set(model.eta_text if active else "—")

    def _model_changed(self) -> None:
        self.refresh()
        if not self.redraw.isActive():
            self.redraw.start()
