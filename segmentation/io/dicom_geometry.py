"""Where a series' slices sit: their order along the slice normal, the slice spacing and its gaps.

Computed from ImagePositionPatient and ImageOrientationPatient only, never from file names or
InstanceNumber, which exporters renumber freely.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from segmentation.errors import SliceGeometryError
from segmentation.volume import IDENTITY_DIRECTION

# Positions are written as decimal strings with a few digits; steps that differ by less than this
# (absolute mm, or relative to the median step) are the same step.
ABSOLUTE_TOLERANCE_MM = 0.01
RELATIVE_TOLERANCE = 0.01


@dataclass(frozen=True)
class SliceGeometry:
    """The sorted layout of a stack of slices in SimpleITK's (x, y, z) conventions.

    `order[i]` is the input index of the i-th slice along the normal. `irregularities` lists missing
    slices, uneven steps or sheared (tilted) stacks: the caller refuses them unless told otherwise.
    """

    order: tuple[int, ...]
    origin: tuple[float, float, float]
    slice_spacing: float
    direction: tuple[float, ...]
    irregularities: tuple[str, ...] = ()


def orientation_matrix(orientation: np.ndarray) -> np.ndarray:
    """3x3 matrix whose columns are the row direction, the column direction and the slice normal."""
    row, column = np.asarray(orientation[:3], float), np.asarray(orientation[3:6], float)
    with np.errstate(invalid="ignore", divide="ignore"):  # zero vectors give NaN, which callers refuse
        row, column = row / np.linalg.norm(row), column / np.linalg.norm(column)
    return np.column_stack([row, column, np.cross(row, column)])


def slice_geometry(
    positions: np.ndarray | None, orientations: np.ndarray | None, default_spacing: float, label: str
) -> SliceGeometry:
    """Sort slices along their normal and measure the spacing; `label` names the series in messages.

    `positions` is (n, 3) ImagePositionPatient, `orientations` (n, 6) ImageOrientationPatient; either
    may be None when the tags are missing, which only a single slice survives.
    """
    count = 1 if positions is None else len(positions)
    if positions is None or orientations is None:
        if count > 1:
            raise SliceGeometryError(f"{label}: slices lack ImagePositionPatient/ImageOrientationPatient, "
                                     "so their order is unknown")
        origin = (0.0, 0.0, 0.0) if positions is None else tuple(float(v) for v in positions[0])
        return SliceGeometry((0,), origin, default_spacing, IDENTITY_DIRECTION)
    if not np.allclose(orientations, orientations[0], atol=1e-4):
        raise SliceGeometryError(f"{label}: slices have different orientations (a localizer or several "
                                 "stacks in one series?)")
    matrix = orientation_matrix(orientations[0])
    if not np.all(np.isfinite(matrix)) or not np.isclose(np.linalg.norm(matrix[:, 2]), 1.0, atol=1e-3):
        raise SliceGeometryError(f"{label}: ImageOrientationPatient is not two perpendicular unit vectors")
    normal = matrix[:, 2]
    along = positions @ normal
    order = np.argsort(along, kind="stable")
    sorted_positions, sorted_along = positions[order], along[order]
    direction = tuple(float(v) for v in matrix.ravel())
    origin = tuple(float(v) for v in sorted_positions[0])
    if count == 1:
        return SliceGeometry((0,), origin, default_spacing, direction)
    steps = np.diff(sorted_along)
    if np.any(steps < ABSOLUTE_TOLERANCE_MM):
        duplicates = int(np.sum(steps < ABSOLUTE_TOLERANCE_MM))
        raise SliceGeometryError(f"{label}: {duplicates} slice(s) share a position with another (several "
                                 "acquisitions, echoes or time points in one series?)")
    spacing = usual_step(steps)
    return SliceGeometry(
        tuple(int(i) for i in order), origin, spacing, direction,
        _irregularities(sorted_positions, sorted_along, normal, spacing, label),
    )


def usual_step(steps: np.ndarray) -> float:
    """The step most slices agree on (ties: the smaller), robust to a few missing slices."""
    tolerance = np.maximum(ABSOLUTE_TOLERANCE_MM, RELATIVE_TOLERANCE * steps)
    agree = np.abs(steps[:, None] - steps[None, :]) <= tolerance[:, None]
    counts = agree.sum(axis=1)
    candidates = np.flatnonzero(counts == counts.max())
    best = candidates[np.argmin(steps[candidates])]
    return float(np.median(steps[agree[best]]))


def _irregularities(
    positions: np.ndarray, along: np.ndarray, normal: np.ndarray, spacing: float, label: str
) -> tuple[str, ...]:
    tolerance = max(ABSOLUTE_TOLERANCE_MM, RELATIVE_TOLERANCE * spacing)
    found = []
    steps = np.diff(along)
    uneven = np.flatnonzero(np.abs(steps - spacing) > tolerance)
    if uneven.size:
        widest = int(uneven[np.argmax(steps[uneven])])
        missing = int(round(steps[widest] / spacing)) - 1
        guess = f", about {missing} slice(s) missing" if missing >= 1 else ""
        found.append(
            f"{label}: slice spacing is not uniform ({uneven.size} step(s) differ from the usual "
            f"{spacing:.4g} mm; the widest is {steps[widest]:.4g} mm between slices {widest} and "
            f"{widest + 1}{guess})"
        )
    offsets = np.diff(positions, axis=0)
    sideways = np.linalg.norm(offsets - np.outer(offsets @ normal, normal), axis=1)
    if np.max(sideways) > tolerance:
        angle = float(np.degrees(np.arctan2(np.max(sideways), spacing)))
        found.append(f"{label}: slices are sheared by up to {angle:.3g} degrees (gantry tilt), so the "
                     "volume's grid only approximates their positions")
    return tuple(found)
