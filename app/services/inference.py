"""Segment the open study with a checkpoint, measure the labels, export the mask.

Runs on a worker thread in the GUI (torch is imported here, on first use, not at start-up).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from app.models.study import Study
from segmentation.errors import ConfigError

if TYPE_CHECKING:
    from segmentation.volume import Volume

Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class ModelSummary:
    """What the inference page says about a checkpoint."""

    path: Path
    labels: dict[int, str]
    epoch: int
    round: int
    augmentation: str
    train_modality: str
    spatial_dims: int
    plan: str  # the plan's one line: studies are resampled to it before the model sees them

    def describe(self) -> str:
        origin = f"federated round {self.round}" if self.round else f"epoch {self.epoch}"
        return (f"{self.spatial_dims}D U-Net, {origin}, trained on {self.train_modality} with "
                f"{self.augmentation} augmentation; {len(self.labels) - 1} labels; plan {self.plan}")


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
    return ModelSummary(path, dict(checkpoint.labels), checkpoint.epoch, checkpoint.round,
                        checkpoint.augmentation, checkpoint.train_modality, checkpoint.network.spatial_dims,
                        checkpoint.plan.describe())
