"""Does a study fit a model? What the Inference page says above Segment, without ever blocking it.

A model knows the modalities it was trained on and its plan (target spacing and patch). A study of
another modality is a note, not a warning: a cross-modality model (GIN and the other augmentations) is
made for it. A study whose voxels are more than SCALE_LIMIT times finer or coarser than the plan's, or
whose body spans less than 1/SCALE_LIMIT of the model's window along an axis, is a warning: the model's
studies were not like it. The plan keeps no fingerprint size ranges, only the patch made from their
median (and shrunk to fit memory), so a body far larger than the training studies is not judged.

A study whose tissue is unlike the training studies' is a warning too: an abdominal model given a chest
names the heart "liver". The plan keeps, per modality, the range of the training studies' tissue
quantiles inside their bodies (segmentation.plan.TissueRange); at the range's low end of the q% quantile
every training study had at most q% of its body below it. A study with more than TISSUE_MARGIN more of
its body there (or above the high end) shows tissue in proportions no training study had. It is judged
for the study's modality, or for the plan's only one when the study does not say its modality.

Plain Python: the study's geometry comes in as numbers (app.services.inference measures it).
"""

from __future__ import annotations

from bisect import bisect_left
from dataclasses import dataclass, field
from typing import NamedTuple

from app.models.study import MODALITY_CAPTIONS
from segmentation.plan import HOUNSFIELD, TISSUE_QUANTILES, Plan, TissueRange, tissue_scale

# Voxels or extents differing more than this from the model's are "far off" (nnU-Net's factor for
# anisotropy, segmentation.plan.ANISOTROPY_THRESHOLD).
SCALE_LIMIT = 3.0
UNKNOWN = "unknown"
_AXES = "xyz"
# The share of a study's body beyond a training range's end, over the most any training study had there,
# that makes its tissue "unlike". Measured against ranges of 3 demo phantoms: held-out phantoms (other
# seeds, every demo site's storage, sizes 16 to 64) went at most 0.13 over for CT and 0.21 for MR T1/T2;
# slicerio's chest CT goes 0.43 or more over every CT range.
TISSUE_MARGIN = 0.25
# Percentiles of a study's body intensities kept to read off the share below any level.
PROFILE_LEVELS = tuple(float(level) for level in range(101))


@dataclass(frozen=True)
class StudyGeometry:
    """A study's modality tag, its voxel spacing and its body's extent, in mm along canonical x, y, z; and
    its body intensities' percentiles at PROFILE_LEVELS per tissue scale ("HU", "window"), when measured."""

    modality: str
    spacing: tuple[float, float, float]
    body_extent: tuple[float, float, float]
    tissue: dict[str, tuple[float, ...]] = field(default_factory=dict)


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
    notes.append(_tissue_warning(plan, study))
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


def _tissue_warning(plan: Plan, study: StudyGeometry) -> FitNote | None:
    """The quantile level whose share of the study's body most exceeds what the training studies had
    beyond it, when by more than TISSUE_MARGIN."""
    reference = _tissue_reference(plan, study.modality)
    if reference is None:
        return None
    scale = tissue_scale(reference[0])
    profile = study.tissue.get(scale)
    if profile is None:
        return None
    worst = max(_tissue_excesses(reference[1], profile))
    if worst.excess <= TISSUE_MARGIN:
        return None
    if scale == HOUNSFIELD:
        where = f"{worst.side} {worst.level:.0f} HU"
    else:
        where = f"{'darker' if worst.side == 'below' else 'brighter'} than {worst.level:.2f} of its own " \
                "intensity range"
    return FitNote(f"this study's tissue looks unlike the training studies' ({worst.share:.0%} of its body "
                   f"is {where}; the training studies had at most {worst.allowed:.0%} there): it may show "
                   "another body region; check the labels it names", warning=True)


def _tissue_reference(plan: Plan, modality: str) -> tuple[str, TissueRange] | None:
    """The plan's tissue range for the study's modality, or its only one when the study's is unknown."""
    tissue = plan.tissue or {}
    if modality in tissue:
        return modality, tissue[modality]
    if modality == UNKNOWN and len(tissue) == 1:
        return next(iter(tissue.items()))
    return None


class _Excess(NamedTuple):
    """The study's share of body beyond a level, over the most any training study had there."""

    excess: float
    share: float
    allowed: float
    level: float
    side: str  # "below" or "above"


def _tissue_excesses(ranges: TissueRange, profile: tuple[float, ...]) -> list[_Excess]:
    """At both ends of each quantile's range: below the low end every training study had at most q% of
    its body, above the high end at most 100 - q%."""
    found = []
    for quantile, low, high in zip(TISSUE_QUANTILES, ranges.low, ranges.high, strict=True):
        below, above = _share_below(profile, low), 1.0 - _share_below(profile, high)
        found.append(_Excess(below - quantile / 100, below, quantile / 100, low, "below"))
        found.append(_Excess(above - (1 - quantile / 100), above, 1 - quantile / 100, high, "above"))
    return found


def _share_below(profile: tuple[float, ...], level: float) -> float:
    """The share of the body below `level`, interpolated between its percentiles (PROFILE_LEVELS)."""
    index = bisect_left(profile, level)
    if index == 0:
        return 0.0
    if index == len(profile):
        return 1.0
    lower, upper = profile[index - 1], profile[index]  # lower < level <= upper
    fraction = (level - lower) / (upper - lower)
    return (PROFILE_LEVELS[index - 1] + fraction * (PROFILE_LEVELS[index] - PROFILE_LEVELS[index - 1])) / 100


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
