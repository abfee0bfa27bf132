"""Segment the open study with a checkpoint, measure the labels, export the mask; find the federation's
latest global model and a site's personalised model among this workbench's sites and say whether a study
fits a model.

Runs on a worker thread in the GUI (torch is imported here, on first use, not at start-up).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from app.models.model_fit import PROFILE_LEVELS, UNKNOWN, FitNote, StudyGeometry, fit_notes
from app.models.study import MODALITY_CAPTIONS, Study
from segmentation.errors import ConfigError
from segmentation.events import read_events
from segmentation.plan import Plan
from segmentation.settings import GLOBAL_MODEL, GLOBAL_MODEL_NAME, PERSONALISED_MODEL, PERSONALISED_MODEL_NAME

if TYPE_CHECKING:
    from segmentation.volume import Volume

Progress = Callable[[int, int], None]

# Where this workbench's sites keep their files, under the workspace: Join on the Federation page writes
# federation/<site>/, the demo federation/sites/<site>/ under its demo-federation folder.
SITE_FOLDERS = ("federation", "demo-federation/federation")
SITE_EVENTS_NAME = "events.jsonl"  # the site's event file beside it, in the folders the workbench writes
# Each kind of model a site keeps: its file in the site's folder and the event the site writes right after
# saving it (federation.site_work), which names its round.
_KEPT_FILES = {GLOBAL_MODEL: (GLOBAL_MODEL_NAME, "global-model"),
               PERSONALISED_MODEL: (PERSONALISED_MODEL_NAME, "personalised-model")}


@dataclass(frozen=True)
class ModelSummary:
    """What the inference page says about a checkpoint."""

    path: Path
    labels: dict[int, str]
    epoch: int
    round: int  # the finished federated round that made a global model (0: not federated)
    kind: str  # segmentation.settings.MODEL_KINDS: local, global or personalised
    augmentation: str
    train_modality: str
    spatial_dims: int
    plan: Plan  # studies are resampled to it before the model sees them

    def describe(self) -> str:
        names = ", ".join(name for value, name in sorted(self.labels.items()) if value)
        return (f"{self.spatial_dims}D U-Net, {self._origin()} with {self.augmentation} augmentation; "
                f"{len(self.labels) - 1} labels ({names}); plan {self.plan.describe()}")

    def _origin(self) -> str:
        """What made the model and on which data. A personalised model names only its site's modality, so
        that is said as the data it was fine-tuned on, not as all it was trained on."""
        modalities = " and ".join(MODALITY_CAPTIONS.get(tag, tag) for tag in self.train_modality.split(",")
                                  if tag and tag != UNKNOWN)
        if self.kind == PERSONALISED_MODEL:
            data = f"{modalities} data" if modalities else "its site's data"
            return f"personalised model (round {self.round}'s global model fine-tuned on {data}), trained"
        made = (f"federated global model, round {self.round}" if self.kind == GLOBAL_MODEL
                else f"epoch {self.epoch}")
        return f"{made}, trained on {modalities}" if modalities else f"{made}, trained"


@dataclass(frozen=True)
class KeptModel:
    """A model a site of this workbench keeps in its folder: the federation's global model or the site's
    personalised one (its kind), its file, the site's folder name and its round (None where the site's
    events do not say)."""

    kind: str
    path: Path
    site: str
    round: int | None

    def describe(self) -> str:
        if self.kind == PERSONALISED_MODEL:
            made = f"round {self.round}'s global model" if self.round else "the final global model"
            return f"site {self.site}'s personalised model ({made} fine-tuned on its own data)"
        which = f"the global model of round {self.round}" if self.round else "the global model"
        return f"{which}, as site {self.site} keeps it"


@dataclass(frozen=True)
class SegmentationResult:
    """A predicted mask in the study's geometry and each label's volume in mL."""

    mask: Volume
    volumes_ml: dict[str, float]
    model: ModelSummary


def describe_model(path: Path) -> ModelSummary:
    from segmentation.checkpoint import load_checkpoint

    return _summary(path, load_checkpoint(path))


def segment(checkpoint_path: Path, study: Study, progress: Progress | None = None) -> SegmentationResult:
    """Run the checkpoint on the study (CUDA when present) and measure every label."""
    from segmentation.checkpoint import load_checkpoint
    from segmentation.inference import label_volumes_ml, predict_volume

    checkpoint = load_checkpoint(checkpoint_path)
    mask = predict_volume(checkpoint, study.image, progress=progress)
    return SegmentationResult(mask, label_volumes_ml(mask), _summary(checkpoint_path, checkpoint))


def latest_global_model(workspace: Path) -> KeptModel | None:
    """The global model a site of this workbench saved last (every site keeps the latest it received, see
    federation.site_work), or None."""
    return _latest_kept_model(workspace, GLOBAL_MODEL)


def latest_personalised_model(workspace: Path) -> KeptModel | None:
    """The personalised model a site of this workbench saved last (a site fine-tunes the final global model
    on its own data after the last round), or None."""
    return _latest_kept_model(workspace, PERSONALISED_MODEL)


def _latest_kept_model(workspace: Path, kind: str) -> KeptModel | None:
    """The newest file of this kind in any site folder; its round is the one the site's events announced
    with it: finding it loads no engine, and choosing it shows what the checkpoint itself says."""
    name, event = _KEPT_FILES[kind]
    found = [path for folder in SITE_FOLDERS for path in (workspace / folder).rglob(name) if path.is_file()]
    if not found:
        return None
    path = max(found, key=lambda path: path.stat().st_mtime)
    return KeptModel(kind, path, path.parent.name, _kept_round(path.parent / SITE_EVENTS_NAME, event))


def _kept_round(event_file: Path, event: str) -> int | None:
    """The round of the site's last event of this kind, which it writes right after saving the model."""
    if not event_file.is_file():
        return None
    rounds = [record.get("round") for record in read_events(event_file) if record.get("kind") == event]
    return rounds[-1] if rounds and isinstance(rounds[-1], int) else None


def check_fit(model: ModelSummary, study: Study) -> tuple[FitNote, ...]:
    """Whether the study fits the model (modality, voxel size, the body's extent, its tissue): notes and
    warnings for the page, never an error."""
    return fit_notes(model.train_modality, model.augmentation, model.plan, study_geometry(study))


def study_geometry(study: Study) -> StudyGeometry:
    """The study's modality, spacing and body extent along the canonical axes (its body's box) and its body
    intensities' percentiles on both tissue scales, as the plan's fingerprint measures its training
    studies."""
    from segmentation.body import body_region, body_values
    from segmentation.geometry import canonical_spacing_and_size
    from segmentation.plan import HOUNSFIELD, WINDOW, tissue_quantiles

    array = np.asarray(study.image.array)
    spacing, size = canonical_spacing_and_size(study.image.with_array(array[body_region(array)]))
    extent = tuple(float(s * n) for s, n in zip(spacing, size, strict=True))
    body = body_values(array)
    tissue = {scale: tissue_quantiles(body, scale, PROFILE_LEVELS) for scale in (HOUNSFIELD, WINDOW)}
    return StudyGeometry(study.modality, spacing, extent, tissue)  # type: ignore[arg-type]


def export_mask(mask: Volume, path: Path) -> Path:
    """Write the mask as NIfTI/NRRD/MetaImage/Slicer segmentation, chosen by the extension."""
    from segmentation.io import write_volume

    return write_volume(mask, path)


def export_dicom_seg(mask: Volume, study: Study, path: Path) -> Path:
    """Write the mask as a DICOM-SEG referencing the study's DICOM series."""
    from segmentation.export import write_dicom_seg

    if not study.is_dicom:
        raise ConfigError(f"{study.name} was not opened from DICOM, so a DICOM-SEG cannot reference it; "
                          "export NIfTI instead")
    return write_dicom_seg(mask, list(study.dicom_datasets), path)


def _summary(path: Path, checkpoint) -> ModelSummary:
    return ModelSummary(path, dict(checkpoint.labels), checkpoint.epoch, checkpoint.round, checkpoint.kind,
                        checkpoint.augmentation, checkpoint.train_modality, checkpoint.network.spatial_dims,
                        checkpoint.plan)


def export_model_bundle(checkpoint_path: Path, out: Path, overwrite: bool = False) -> Path:
    """The checkpoint as a MONAI bundle in `out` (segmentation.bundle; torch loads here, on first use)."""
    from segmentation.bundle import export_bundle

    return export_bundle(checkpoint_path, out, overwrite=overwrite)
