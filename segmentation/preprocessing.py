"""How a study becomes network input, the one path shared by training, evaluation and inference.

A study goes onto the plan's canonical grid (RAS, target spacing; segmentation.geometry), is cropped
to the box around the body (segmentation.body, as nnU-Net crops to the non-zero region) and its
intensities are normalized the plan's way. The settings live in the plan, which travels inside every
checkpoint, so a model always sees its input prepared exactly as its training data was. Torch-free.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from segmentation.body import body_region
from segmentation.errors import GeometryError, GeometryMismatchError
from segmentation.geometry import Grid, canonical_grid, check_spacing, to_canonical
from segmentation.plan import Plan
from segmentation.volume import Volume

_AXIS_NAMES = ("from head to foot", "from front to back", "from left to right")  # canonical z, y, x
_WINDOW_SAMPLE = 4_000_000  # voxels the window is taken from: an even sample of larger studies
# A study needs at least this many voxels (or the patch's side, if smaller) along every patch axis.
MIN_STUDY_SIDE = 8


@dataclass(frozen=True)
class PreparedStudy:
    """The body's box of a study on the canonical grid: normalized float32 image and (for training)
    uint8 labels, both (z, y, x); `region` places the box on the whole canonical `grid`."""

    image: np.ndarray
    label: np.ndarray | None
    grid: Grid
    region: tuple[slice, slice, slice]


def normalize_intensity(array: np.ndarray, plan: Plan, modality: str = "unknown") -> np.ndarray:
    """Clip to the image's own percentile window and scale to [0, 1] (modality-agnostic), or z-score
    with the modality's statistics when the plan carries them."""
    if plan.modality_statistics is not None:
        from segmentation.transforms.dsn import DomainSpecificNormalization, ModalityStatistics

        statistics = ModalityStatistics.from_dict(plan.modality_statistics)
        return DomainSpecificNormalization(statistics)(np.asarray(array), modality).astype(np.float32)
    data = np.asarray(array, dtype=np.float32)
    low, high = intensity_window(data, plan)
    if high <= low:
        return np.zeros_like(data)
    return np.clip((data - low) / (high - low), 0.0, 1.0).astype(np.float32)


def intensity_window(array: np.ndarray, plan: Plan) -> tuple[float, float]:
    """The plan's percentiles of the image (an even sample of a large one). Given the box around the body,
    as prepare_study gives it, the window does not move with the field of view: the air around is gone."""
    values = np.asarray(array, dtype=np.float32).ravel()
    if values.size > _WINDOW_SAMPLE:
        values = values[:: values.size // _WINDOW_SAMPLE]
    low, high = np.percentile(values, [plan.lower_percentile, plan.upper_percentile])
    return float(low), float(high)


def prepare_study(
    image: Volume, plan: Plan, label: Volume | None = None, name: str = "the study"
) -> PreparedStudy:
    """The study (and its label map) on the plan's canonical grid, intensities normalized.

    Zero, negative or NaN spacing, a label on another grid and a study too small for the plan's patch
    are refused with one line naming `name` (see check_study).
    """
    grid = check_study(image, plan, name)
    if label is not None:
        differences = image.geometry_differences(label)
        if differences:
            raise GeometryMismatchError(f"{name} and its label do not line up: {'; '.join(differences)}")
    canonical = np.asarray(to_canonical(image, grid).array)
    labels = None
    if label is not None:
        labels = np.asarray(to_canonical(label, grid, label=True).array).astype(np.uint8, copy=False)
    region = body_region(canonical, also=labels)
    normalized = normalize_intensity(canonical[region], plan, image.modality)
    return PreparedStudy(normalized, labels[region] if labels is not None else None, grid, region)


def check_study(image: Volume, plan: Plan, name: str = "the study") -> Grid:
    """The study's canonical grid under the plan, after checking that its spacing is usable and that it
    is large enough for the plan's patches (a cheap check, before any resampling)."""
    check_spacing(image, name)
    grid = canonical_grid(image, plan.target_spacing, keep_slice_spacing=plan.spatial_dims == 2)
    shape = grid.size[::-1]  # (z, y, x)
    axes = range(3) if plan.spatial_dims == 3 else range(1, 3)
    for axis, side in zip(axes, plan.patch_shape_3d[3 - len(axes):], strict=True):
        needed = min(MIN_STUDY_SIDE, side)
        if shape[axis] < needed:
            raise GeometryError(
                f"{name} is {shape[axis]} voxels {_AXIS_NAMES[axis]} at the plan's spacing; "
                f"at least {needed} are needed for patches of {' x '.join(map(str, plan.patch_size))}"
            )
    return grid
