"""Geometric primitives of the phantom, evaluated on continuous coordinates.

Points are (3, ...) arrays of (u, v, t), in [-1, 1] over the default field of view: u runs from the
patient's right to left (image columns), v from anterior to posterior (image rows), t from inferior
to superior (slices); one unit is 200 mm in-plane and 100 mm along t (see synth/scan.py). Shapes are
functions of these coordinates, never of voxel indices, so one anatomy keeps its form on any grid.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


def _centres(n: int) -> np.ndarray:
    return (np.arange(n) + 0.5) / n * 2.0 - 1.0


def grid(
    depth: int, height: int, width: int, level: float = 0.0,
    span: tuple[float, float, float] = (1.0, 1.0, 1.0),
) -> np.ndarray:
    """Voxel-centre coordinates (3, depth, height, width); a single slice (depth 1) sits at t=level.

    The grid is centred on 0 and reaches `span` (u, v, t) units either way: a field of view wider
    than the default one reaches past 1, so more pixels cover the same body plus its surroundings.
    """
    t = _centres(depth) * span[2] if depth > 1 else np.array([level])
    tt, vv, uu = np.meshgrid(t, _centres(height) * span[1], _centres(width) * span[0], indexing="ij")
    return np.stack([uu, vv, tt]).astype(np.float32)


@dataclass(frozen=True)
class SmoothField:
    """A zero-mean, roughly unit-variance random field: a sum of random low-frequency cosines."""

    frequencies: np.ndarray  # (modes, 3) in radians per unit length
    phases: np.ndarray  # (modes,)
    weights: np.ndarray  # (modes,)

    @classmethod
    def sample(cls, rng: np.random.Generator, cycles: float = 1.5, modes: int = 8) -> SmoothField:
        """`cycles`: the highest frequency in cycles across the field of view (2 units)."""
        return cls(
            frequencies=(rng.uniform(-cycles, cycles, (modes, 3)) * np.pi).astype(np.float32),
            phases=rng.uniform(0.0, 2.0 * np.pi, modes).astype(np.float32),
            weights=(rng.normal(0.0, 1.0, modes) * np.sqrt(2.0 / modes)).astype(np.float32),
        )

    def __call__(self, points: np.ndarray) -> np.ndarray:
        field = np.zeros(points.shape[1:], np.float32)
        for (fu, fv, ft), phase, weight in zip(self.frequencies, self.phases, self.weights, strict=True):
            field += weight * np.cos(fu * points[0] + fv * points[1] + ft * points[2] + phase)
        return field


def ellipsoid(
    points: np.ndarray,
    center: Sequence[float],
    radii: Sequence,
    angle: float = 0.0,
    wobble: np.ndarray | None = None,
) -> np.ndarray:
    """Mask of an ellipsoid turned by `angle` (radians) in the axial plane.

    A radius may be an array (e.g. varying along t) or inf (a cylinder); `wobble` is a field added to
    the normalized squared radius, which bumps the surface smoothly in and out.
    """
    du, dv, dt = (points[axis] - center[axis] for axis in range(3))
    cos, sin = math.cos(angle), math.sin(angle)  # Python floats keep float32 arrays float32
    du, dv = cos * du + sin * dv, -sin * du + cos * dv
    with np.errstate(divide="ignore", invalid="ignore"):
        radius2 = (du / radii[0]) ** 2 + (dv / radii[1]) ** 2 + (dt / radii[2]) ** 2
    if wobble is not None:
        radius2 = radius2 + wobble
    return np.nan_to_num(radius2, nan=np.inf) < 1.0


def superellipse(points: np.ndarray, center: Sequence[float], radii: Sequence, exponent: float) -> np.ndarray:
    """Mask of an axial superellipse extruded along t (a body outline: flatter than an ellipse)."""
    du = np.abs(points[0] - center[0]) / radii[0]
    dv = np.abs(points[1] - center[1]) / radii[1]
    return du**exponent + dv**exponent < 1.0


def tube(points: np.ndarray, curve: np.ndarray, radii: np.ndarray, t_stretch: float = 1.0) -> np.ndarray:
    """Mask of a tube of varying radius along a polyline `curve` (n, 3); t distances are divided by
    `t_stretch`, so the tube is that much thicker across slices."""
    reach = float(np.max(radii)) * np.array([1.0, 1.0, t_stretch], np.float32)[:, None]
    low, high = curve.min(axis=0)[:, None] - reach, curve.max(axis=0)[:, None] + reach
    flat = points.reshape(3, -1)
    candidates = np.flatnonzero(np.all((flat >= low) & (flat <= high), axis=0))  # bounding box only
    u, v, t = flat[:, candidates]
    nearest = np.full(candidates.size, np.inf, np.float32)
    for (cu, cv, ct), radius in zip(curve, radii, strict=True):
        distance2 = (u - cu) ** 2 + (v - cv) ** 2 + ((t - ct) / t_stretch) ** 2
        np.minimum(nearest, distance2 / radius**2, out=nearest)
    mask = np.zeros(flat.shape[1], bool)
    mask[candidates[nearest < 1.0]] = True
    return mask.reshape(points.shape[1:])


def bezier(start: Sequence[float], control: Sequence[float], end: Sequence[float], n: int = 48) -> np.ndarray:
    """n points (n, 3) on the quadratic Bezier curve start -> end bent towards control."""
    s = np.linspace(0.0, 1.0, n)[:, None]
    p0, p1, p2 = (np.asarray(p, np.float32) for p in (start, control, end))
    return (1 - s) ** 2 * p0 + 2 * (1 - s) * s * p1 + s**2 * p2
