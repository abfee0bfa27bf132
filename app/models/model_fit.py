"""Does a study fit a model? What the Inference page says above Segment, without ever blocking it.

A model knows the modalities it was trained on and its plan (target spacing and patch). A study of
another modality is a note, not a warning: a cross-modality model (GIN and the other augmentations) is
made for it. A study whose voxels are more than SCALE_LIMIT times finer or coarser than the plan's, or
whose body spans less than 1/SCALE_LIMIT of the model's window along an axis, is a warning: the model's
studies were not like it. The plan keeps no fingerprint size ranges, only the patch made from their
median (and shrunk to fit memory), so a body far larger than the training studies is not judged.

Plain Python: the study's geometry comes in as numbers (app.services.inference measures it).
"""

from __future__ import annotations

from dataclasses import dataclass

from app.models.study import MODALITY_CAPTIONS
from segmentation.plan import Plan

# Voxels or extents differing more than this from the model's are "far off" (nnU-Net's factor for
# anisotropy, segmentation.plan.ANISOTROPY_THRESHOLD).
SCALE_LIMIT = 3.0
UNKNOWN = "unknown"
_AXES = "xyz"


@dataclass(frozen=True)
class StudyGeometry:
    """A study's modality tag, its voxel spacing and its body's extent, in mm along canonical x, y, z."""

    modality: str
    spacing: tuple[float, float, float]
    body_extent: tuple[float, float, float]


@dataclass(frozen=True)
class FitNote:
    """One sentence about the fit; `warning` False for a note (expected use that is worth knowing)."""

    text: str
    warning: bool

    def line(self) -> str:
        return f"{'Warning' if self.warning else 'Note'}: {self.text}"


def fit_notes(
    train_modality: str, augmentation: str, plan: Plan, study: StudyGeometry
) -> tuple[FitNote, ...]:
    """The notes and warnings for segmenting `study` with a model trained on `train_modality` (one tag or
    several, comma-separated; "unknown" when the model does not say) following `plan`."""
    notes = [_modality_note(train_modality, augmentation, study.modality), _spacing_warning(plan, study)]
    if "patch_size" not in plan.overridden:  # a patch set by hand says nothing about the training studies
        notes.append(_extent_warning(plan, study))
    return tuple(note for note in notes if note is not None)


def _same_modality(trained: str, study: str) -> bool:
    """A plain "mr" tag matches any MR sequence; the MR sequences differ from each other as CT does."""
    both_mr = trained.startswith("mr") and study.startswith("mr")
    return trained == study or (both_mr and "mr" in (trained, study))


def _caption(modality: str) -> str:
    return MODALITY_CAPTIONS.get(modality, modality.upper())


def _modality_note(train_modality: str, augmentation: str, study: str) -> FitNote | None:
    trained = [tag for tag in train_modality.split(",") if tag and tag != UNKNOWN]
    if not trained or study == UNKNOWN or any(_same_modality(tag, study) for tag in trained):
        return None
    names = " and ".join(_caption(tag) for tag in trained)
    if augmentation == "none":
        return FitNote(f"the model was trained on {names} only, without cross-modality augmentation; on this "
                       f"{_caption(study)} study expect a weaker result", warning=False)
    return FitNote(f"the model was trained on {names}; on this {_caption(study)} study it relies on its "
                   f"{augmentation} augmentation (cross-modality use)", warning=False)


def _spacing_warning(plan: Plan, study: StudyGeometry) -> FitNote | None:
    """The axes whose voxels are far finer or coarser than the plan's (in-plane only for a 2D plan, whose
    slices stay as stored)."""
    axes = _far_off(study.spacing, plan.target_spacing, plan.spatial_dims, below_only=False)
    if not axes:
        return None
    finer = "finer" if study.spacing[axes[0]] < plan.target_spacing[axes[0]] else "coarser"
    ours = _millimetres(plan.target_spacing, axes)
    return FitNote(f"the study's voxels are {_millimetres(study.spacing, axes)} along {_names(axes)}, over "
                   f"{SCALE_LIMIT:g} times {finer} than the model's {ours}; a scan this unlike its studies "
                   "may be segmented poorly", warning=True)


def _extent_warning(plan: Plan, study: StudyGeometry) -> FitNote | None:
    """The axes along which the body spans far less than the model's window (its patch at its spacing,
    which the plan made from its studies' median extent)."""
    window = tuple(side * spacing for side, spacing in zip(plan.patch_size[::-1], plan.target_spacing,
                                                           strict=False))  # patch sides are (z,) y, x
    axes = _far_off(study.body_extent, window, plan.spatial_dims, below_only=True)
    if not axes:
        return None
    return FitNote(f"the study's body spans {_millimetres(study.body_extent, axes, digits=0)} along "
                   f"{_names(axes)}, under 1/{SCALE_LIMIT:g} of the model's window "
                   f"({_millimetres(window, axes, digits=0)}); it may show another or a smaller region than "
                   "the model's studies", warning=True)


def _far_off(theirs: tuple[float, ...], ours: tuple[float, ...], dims: int, below_only: bool) -> list[int]:
    """The first `dims` canonical axes on which `theirs` is below ours / SCALE_LIMIT (or, unless
    below_only, above ours * SCALE_LIMIT); those of the first verdict only, so one sentence says it."""
    low = [axis for axis in range(dims) if theirs[axis] * SCALE_LIMIT < ours[axis]]
    high = [] if below_only else [axis for axis in range(dims) if theirs[axis] > ours[axis] * SCALE_LIMIT]
    return low or high


def _names(axes: list[int]) -> str:
    return ", ".join(_AXES[axis] for axis in axes)


def _millimetres(values: tuple[float, ...], axes: list[int], digits: int | None = None) -> str:
    text = [f"{values[axis]:.{digits}f}" if digits is not None else f"{values[axis]:.3g}" for axis in axes]
    return " x ".join(text) + " mm"
