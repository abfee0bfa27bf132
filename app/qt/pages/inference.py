"""Inference: segment the open study with a checkpoint on a worker thread, show the mask over the
study, list each structure's volume in mL, export NIfTI or DICOM-SEG. One click takes the federation's
latest global model that a site of this workbench kept, another the site's personalised model; notes above
Segment say when the study does not fit the model (they never block it)."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QAbstractItemView,
    QFileDialog,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QProgressBar,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
)

from app.models.orientation import ViewAxis
from app.qt.dialogs import ask, show_error
from app.qt.viewer.panels import swatch
from app.qt.viewer.view_grid import ViewPanel
from app.qt.widgets.common import Card, Page, PathField, button, hint
from app.qt.worker import run_in_background
from app.services.inference import (
    KeptModel,
    ModelSummary,
    SegmentationResult,
    check_fit,
    describe_model,
    export_dicom_seg,
    export_mask,
    export_model_bundle,
    latest_global_model,
    latest_personalised_model,
    segment,
)
from app.services.workbench import Workbench

REPLACE_BUNDLE = "Write into it"
MODEL_HINT = ("Choose a checkpoint: a local run's model.pt, the federation's global model or a site's "
              "personalised model.")
NO_GLOBAL_MODEL = ("No site of this workbench keeps a global model yet: a site saves it in its folder once "
                   "its federation finished a round (join one on the Federation page, or run the demo).")
NO_PERSONALISED_MODEL = ("No site of this workbench keeps a personalised model yet: after a federation's "
                         "last round each site fine-tunes the final global model on its own data and saves "
                         "it in its folder, when the federation asks for it (personalise_epochs in "
                         "server.toml; the demo does).")
MASK_FILTER = "NIfTI (*.nii.gz);;NRRD (*.nrrd);;Slicer segmentation (*.seg.nrrd);;MetaImage (*.mha)"


class InferencePage(Page):
    def __init__(self, workbench: Workbench, shell) -> None:
        super().__init__("Inference", "Segment the open study with a trained model (this site's or the "
                         "federation's), check each structure's volume and export the mask.")
        self.workbench, self.shell = workbench, shell
        self.viewer = workbench.viewer
        self.result: SegmentationResult | None = None
        self.summary: ModelSummary | None = None  # the chosen checkpoint's, once read
        self.global_model: KeptModel | None = None
        self.personalised_model: KeptModel | None = None
        self.busy = False
        row = QHBoxLayout()
        row.setSpacing(12)
        left = QVBoxLayout()
        left.setSpacing(12)
        for card, stretch in ((self._model_card(), 0), (self._results_card(), 1)):
            card.setFixedWidth(400)
            left.addWidget(card, stretch)
        row.addLayout(left)
        preview = Card("Preview")
        self.preview_caption = hint("")
        preview.header.addWidget(self.preview_caption, 1)
        self.preview = ViewPanel(self.viewer, ViewAxis.AXIAL)
        preview.body.addWidget(self.preview, 1)
        row.addWidget(preview, 1)
        self.content.addLayout(row, 1)
        self.viewer.study_changed.connect(self._study_changed)
        self.viewer.modality_changed.connect(self._show_study)
        self.viewer.labels_changed.connect(self.refresh)
        if workbench.settings.last_checkpoint:
            self.model_path.set_path(workbench.settings.last_checkpoint)
        self._study_changed()

    def _model_card(self) -> Card:
        card = Card("Model")
        self.model_path = PathField("file", "Choose a checkpoint", "Checkpoints (*.pt);;All files (*)",
                                    placeholder="model.pt of a training or federation run")
        self.model_path.changed.connect(self._model_changed)
        card.body.addWidget(self.model_path)
        self.use_global = button("Use this federation's latest global model", "federation")
        self.use_global.clicked.connect(lambda: self.use_kept_model(self.global_model))
        card.body.addWidget(self.use_global)
        self.use_personalised = button("Use this site's personalised model", "federation")
        self.use_personalised.clicked.connect(lambda: self.use_kept_model(self.personalised_model))
        card.body.addWidget(self.use_personalised)
        self._show_kept_models((None, None))
        self.export_bundle = button("Export as MONAI bundle…", "export")
        self.export_bundle.setToolTip("A MONAI bundle of this model (labels, plan, inference config, "
                                      "weights) for MONAI Label, MONAI Deploy or MONAI's bundle runner")
        self.export_bundle.clicked.connect(self.choose_bundle_folder)
        card.body.addWidget(self.export_bundle)
        self.model_info = hint(MODEL_HINT)
        card.body.addWidget(self.model_info)
        study_title = QLabel("Study")
        study_title.setObjectName("CardTitle")
        card.body.addWidget(study_title)
        self.study_info = hint("")
        card.body.addWidget(self.study_info)
        self.fit_info = hint("")  # notes and warnings: does the study fit the model?
        self.fit_info.hide()
        card.body.addWidget(self.fit_info)
        actions = QHBoxLayout()
        self.segment_button = button("Segment", "inference", primary=True)
        self.segment_button.clicked.connect(self.run_segmentation)
        actions.addWidget(self.segment_button)
        self.open_viewer = button("Open in viewer", "viewer")
        self.open_viewer.clicked.connect(lambda: self.shell.navigate("viewer"))
        actions.addWidget(self.open_viewer)
        actions.addStretch(1)
        card.body.addLayout(actions)
        self.progress = QProgressBar()
        self.progress.setRange(0, 1)
        self.progress.setValue(0)
        card.body.addWidget(self.progress)
        return card

    def _results_card(self) -> Card:
        card = Card("Structures")
        self.table = QTableWidget(0, 2)
        self.table.setHorizontalHeaderLabels(["Label", "Volume (mL)"])
        self.table.verticalHeader().hide()
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.NoSelection)
        self.table.setShowGrid(False)
        self.table.setAlternatingRowColors(True)
        self.table.horizontalHeader().setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        self.table.horizontalHeader().setSectionResizeMode(1, QHeaderView.ResizeMode.ResizeToContents)
        card.body.addWidget(self.table, 1)
        exports = QHBoxLayout()
        self.export_nifti = button("Export mask…", "export")
        self.export_nifti.setToolTip("NIfTI, NRRD, Slicer segmentation or MetaImage, in the study's geometry")
        self.export_nifti.clicked.connect(self.choose_mask_file)
        self.export_seg = button("Export DICOM-SEG…", "export")
        self.export_seg.setToolTip("A DICOM-SEG referencing the study's DICOM series (DICOM studies only)")
        self.export_seg.clicked.connect(self.choose_seg_file)
        exports.addWidget(self.export_nifti)
        exports.addWidget(self.export_seg)
        exports.addStretch(1)
        card.body.addLayout(exports)
        return card

    # -- actions -----------------------------------------------------------------------------
    def showEvent(self, event) -> None:  # noqa: N802 - Qt's name
        """Look again for the kept models: a federation may have finished a round meanwhile."""
        super().showEvent(event)
        self.find_kept_models()

    def find_kept_models(self) -> None:
        """The latest global and personalised models this workbench's sites keep, in one background look."""
        workspace = self.workbench.settings.workspace_dir

        def not_found(error: BaseException) -> None:
            for kept in (self.use_global, self.use_personalised):
                kept.setToolTip(f"Could not look for it: {error}")

        run_in_background(self, lambda _report: (latest_global_model(workspace),
                                                 latest_personalised_model(workspace)),
                          self._show_kept_models, not_found)

    def _show_kept_models(self, found: tuple[KeptModel | None, KeptModel | None]) -> None:
        self.global_model, self.personalised_model = found
        for kept, model, missing in ((self.use_global, self.global_model, NO_GLOBAL_MODEL),
                                     (self.use_personalised, self.personalised_model, NO_PERSONALISED_MODEL)):
            kept.setEnabled(model is not None)
            kept.setToolTip(f"Use {model.describe()}: {model.path}" if model else missing)

    def use_kept_model(self, model: KeptModel | None) -> None:
        """Fill the checkpoint with a kept model found; its description follows as for any file."""
        if model is not None:
            self.model_path.set_path(model.path)

    def _model_changed(self, _text: str) -> None:
        path = self.model_path.path
        self.summary = None
        self.model_info.setText("Reading the checkpoint…" if path and path.is_file() else MODEL_HINT)
        if path is not None and path.is_file():
            run_in_background(self, lambda _report: describe_model(path), self._described,
                              lambda error: self._not_usable(path, error))
        self._check_fit()
        self.refresh()

    def _described(self, summary: ModelSummary) -> None:
        if summary.path != self.model_path.path:  # another file was chosen meanwhile
            return
        self.summary = summary
        self.model_info.setText(summary.describe())
        self._check_fit()

    def _not_usable(self, path: Path, error: BaseException) -> None:
        if path == self.model_path.path:
            self.model_info.setText(f"Not usable: {error}")

    def _check_fit(self) -> None:
        """Measure the study against the model off the GUI thread; a late answer for another pair is
        dropped."""
        summary, study = self.summary, self.viewer.study
        self.fit_info.hide()
        if summary is None or study is None:
            return

        def show(lines: list[str]) -> None:
            if summary is self.summary and study is self.viewer.study:
                self.fit_info.setText("\n".join(lines))
                self.fit_info.setVisible(bool(lines))

        run_in_background(self, lambda _report: [note.line() for note in check_fit(summary, study)], show,
                          lambda error: show([f"Could not check whether the study fits the model: {error}"]))

    def run_segmentation(self) -> None:
        study, path = self.viewer.study, self.model_path.path
        if study is None or path is None:
            return
        self.busy = True
        self.progress.setRange(0, 1)
        self.progress.setValue(0)
        self.refresh()
        self.shell.show_status(f"Segmenting {study.name}…")

        def work(report) -> SegmentationResult:
            return segment(path, study, lambda done, total: report((done, total)))

        run_in_background(self, work, self._segmented, self._failed, self._progress)

    def _progress(self, value: tuple[int, int]) -> None:
        done, total = value
        self.progress.setRange(0, total)
        self.progress.setValue(done)

    def _segmented(self, result: SegmentationResult) -> None:
        self.busy = False
        self.result = result
        self.workbench.settings.last_checkpoint = str(result.model.path)
        self.workbench.save()
        self.viewer.set_labels(result.mask, f"prediction of {result.model.path.name}")
        self.shell.show_status(f"Segmented with {result.model.path}")
        self.refresh()

    def _failed(self, error: BaseException) -> None:
        self.busy = False
        self.shell.show_status("")
        show_error(self, "Segmentation failed", error, "segmenting the study")
        self.refresh()

    def choose_mask_file(self) -> None:
        if self.result is None:
            return
        suggestion = str(self.workbench.settings.workspace_dir / "exports" / f"{self._stem()}-mask.nii.gz")
        chosen, _ = QFileDialog.getSaveFileName(self, "Export the mask", suggestion, MASK_FILTER)
        if chosen:
            self.export(Path(chosen), dicom=False)

    def choose_seg_file(self) -> None:
        if self.result is None:
            return
        suggestion = str(self.workbench.settings.workspace_dir / "exports" / f"{self._stem()}-seg.dcm")
        chosen, _ = QFileDialog.getSaveFileName(self, "Export a DICOM-SEG", suggestion, "DICOM (*.dcm)")
        if chosen:
            self.export(Path(chosen), dicom=True)

    def choose_bundle_folder(self) -> None:
        """Export the chosen checkpoint as a MONAI bundle into a folder; a folder with files in it is
        replaced only after asking (the bundle's own files; others stay)."""
        model = self.model_path.path
        if model is None:
            return
        suggestion = str(self.workbench.settings.workspace_dir / "exports" / f"{model.parent.name}-bundle")
        chosen = QFileDialog.getExistingDirectory(self, "Export as a MONAI bundle into", suggestion)
        if not chosen:
            return
        out = Path(chosen)
        overwrite = out.is_dir() and any(out.iterdir())
        question = f"{out} holds files already. Write the bundle's files into it (other files stay)?"
        if overwrite and ask(self, "The folder is not empty", question, (REPLACE_BUNDLE,)) != REPLACE_BUNDLE:
            return
        run_in_background(self, lambda _report: export_model_bundle(model, out, overwrite=overwrite),
                          lambda written: self.shell.show_status(f"Wrote the MONAI bundle to {written}"),
                          lambda error: show_error(self, "Export failed", error, "exporting the bundle"))

    def export(self, path: Path, dicom: bool) -> None:
        """Write the last result (off the GUI thread); the status bar says where it went."""
        result, study = self.result, self.viewer.study
        if result is None or study is None:
            return

        def work(_report) -> Path:
            return export_dicom_seg(result.mask, study, path) if dicom else export_mask(result.mask, path)

        run_in_background(self, work, lambda written: self.shell.show_status(f"Wrote {written}"),
                          lambda error: show_error(self, "Export failed", error, "exporting"))

    def _stem(self) -> str:
        name = self.viewer.study.name if self.viewer.study else "study"
        for suffix in (".nii.gz", ".seg.nrrd", ".nrrd", ".nii", ".mha", ".mhd", ".dcm"):
            if name.lower().endswith(suffix):
                return name[: -len(suffix)]
        return name.replace(" ", "_")

    # -- view ----------------------------------------------------------------------------------
    def _study_changed(self) -> None:
        self.result = None
        self._show_study()

    def _show_study(self) -> None:
        """The study's line and its fit to the model (again when it is tagged with another modality)."""
        study = self.viewer.study
        self.study_info.setText(f"{study.name} · {study.modality.upper()} · "
                                f"{' × '.join(str(n) for n in reversed(study.image.shape))} voxels"
                                if study else "No study open: open one in the Viewer or from Home.")
        self._check_fit()
        self.refresh()

    def refresh(self) -> None:
        has_study, has_model = self.viewer.has_study, self.model_path.path is not None
        self.segment_button.setEnabled(has_study and has_model and not self.busy)
        self.export_bundle.setEnabled(has_model)
        has_result = self.result is not None
        self.export_nifti.setEnabled(has_result and not self.busy)
        study = self.viewer.study
        exportable = bool(study and study.can_export_dicom_seg)
        self.export_seg.setEnabled(has_result and not self.busy and exportable)
        self.export_seg.setToolTip(study.dicom_seg_problem if study and study.dicom_seg_problem else
                                   "A DICOM-SEG that references the open DICOM series")
        self.preview_caption.setText(f"Overlay: {self.viewer.label_source}" if self.viewer.has_labels else
                                     "The prediction appears over the study here and in the viewer.")
        self._fill_table()

    def _fill_table(self) -> None:
        volumes = self.result.volumes_ml if self.result is not None else {}
        layers = {layer.name: layer for layer in self.viewer.layers.values()}
        self.table.setRowCount(len(volumes))
        for row, (name, millilitres) in enumerate(volumes.items()):
            item = QTableWidgetItem(name)
            if name in layers:
                item.setIcon(swatch(layers[name].color))
            self.table.setItem(row, 0, item)
            value = QTableWidgetItem(f"{millilitres:,.1f}")
            value.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
            self.table.setItem(row, 1, value)
