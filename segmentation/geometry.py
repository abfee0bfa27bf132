"""Canonical grids: every study to one orientation (RAS) and the plan's spacing, and predictions back.

The network only ever sees studies on a canonical grid: axes pointing to the patient's Right, Anterior
and Superior (RAS; in ITK's LPS world coordinates the direction diag(-1, -1, 1)), at the plan's target
spacing, covering the study's whole field of view. Axis-aligned studies are reoriented exactly (a
permutation and flips, SimpleITK's DICOMOrient) and resampled only where the spacing differs; oblique
studies are resampled onto the canonical grid around their bounding box. A prediction made on that grid
goes back onto the study's own grid with SimpleITK's resampling, never by hand.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk

from segmentation.errors import GeometryError
from segmentation.volume import Volume

CANONICAL_DIRECTION = (-1.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0, 1.0)
CANONICAL_CODE = "RAS"
OBLIQUE = "oblique"
# Direction cosines closer than this to a signed permutation count as axis-aligned (about 0.01 degree).
_ALIGNMENT_TOLERANCE = 1e-4


@dataclass(frozen=True)
class Grid:
    """A voxel grid in physical space: size (x, y, z), spacing (mm), origin (mm) and direction."""

    size: tuple[int, int, int]
    spacing: tuple[float, float, float]
    origin: tuple[float, float, float]
    direction: tuple[float, ...]

    @classmethod
    def of(cls, volume: Volume) -> Grid:
        z, y, x = volume.shape
        return cls((x, y, z), tuple(volume.spacing), tuple(volume.origin), tuple(volume.direction))

    @classmethod
    def of_image(cls, image: sitk.Image) -> Grid:
        return cls(tuple(image.GetSize()), tuple(image.GetSpacing()), tuple(image.GetOrigin()),
                   tuple(image.GetDirection()))

    def reference(self) -> sitk.Image:
        """An empty image on this grid, for SimpleITK's Resample."""
        image = sitk.Image([int(n) for n in self.size], sitk.sitkUInt8)
        image.SetSpacing(self.spacing)
        image.SetOrigin(self.origin)
        image.SetDirection(self.direction)
        return image

    def matches(self, other: Grid) -> bool:
        return (self.size == other.size
                and np.allclose(self.spacing, other.spacing, rtol=1e-6, atol=1e-6)
                and np.allclose(self.origin, other.origin, rtol=1e-6, atol=1e-4)
                and np.allclose(self.direction, other.direction, atol=1e-6))


def check_spacing(volume: Volume, name: str) -> None:
    """Zero, negative or non-finite spacing is refused before any resampling."""
    spacing = np.asarray(volume.spacing, dtype=np.float64)
    if not np.all(np.isfinite(spacing)) or np.any(spacing <= 0):
        raise GeometryError(f"{name} has an invalid voxel spacing {tuple(volume.spacing)}; every spacing "
                            "must be a positive number of millimetres")


def orientation_code(direction: tuple[float, ...]) -> str:
    """The storage orientation ("LPS", "RAS", "PIR"...) of an axis-aligned direction, else "oblique"."""
    matrix = np.asarray(direction, dtype=np.float64).reshape(3, 3)
    if not _is_signed_permutation(matrix):
        return OBLIQUE
    return sitk.DICOMOrientImageFilter_GetOrientationFromDirectionCosines(tuple(float(v) for v in direction))


def canonical_axes(direction: tuple[float, ...]) -> list[int]:
    """For each canonical axis (x, y, z), the storage axis that runs closest to it."""
    matrix = np.abs(np.asarray(direction, dtype=np.float64).reshape(3, 3))  # rows: world, columns: axes
    return [int(np.argmax(matrix[world])) for world in range(3)]


def canonical_spacing_and_size(volume: Volume) -> tuple[tuple[float, ...], tuple[int, ...]]:
    """The study's spacing and size along the canonical x, y, z axes (its fingerprint geometry)."""
    axes = canonical_axes(volume.direction)
    size_xyz = volume.shape[::-1]
    return tuple(float(volume.spacing[a]) for a in axes), tuple(int(size_xyz[a]) for a in axes)


def canonical_grid(volume: Volume, spacing: tuple[float, float, float], keep_slice_spacing: bool) -> Grid:
    """The RAS grid at `spacing` (mm, x y z) over the volume's field of view.

    It starts at the study's first voxel centre along each canonical axis (the corner of an oblique
    study's bounding box) and steps by the target spacing up to its last one, so a study already at the
    target spacing keeps its own samples. With keep_slice_spacing (2D plans) the z spacing is the study's
    own along its axis nearest to S.
    """
    native, _ = canonical_spacing_and_size(volume)
    target = np.array([spacing[0], spacing[1], native[2] if keep_slice_spacing else spacing[2]])
    source = Grid.of(volume)
    matrix = np.asarray(source.direction).reshape(3, 3)
    corners = np.array([[i, j, k] for i in (0, source.size[0] - 1) for j in (0, source.size[1] - 1)
                        for k in (0, source.size[2] - 1)])
    world = np.asarray(source.origin) + (corners * np.asarray(source.spacing)) @ matrix.T
    canonical = np.asarray(CANONICAL_DIRECTION).reshape(3, 3)
    along = world @ canonical  # voxel-centre coordinates along the canonical axes (orthonormal)
    low, high = along.min(axis=0), along.max(axis=0)
    size = np.round((high - low) / target).astype(int) + 1
    return Grid(tuple(int(n) for n in size), tuple(float(v) for v in target),
                tuple(float(v) for v in canonical @ low), CANONICAL_DIRECTION)


def to_canonical(volume: Volume, grid: Grid, label: bool = False) -> Volume:
    """The volume on the canonical grid: exact reorientation when that suffices, else resampled (cubic
    B-spline for images, as nnU-Net's third order; nearest neighbour for label maps; outside the
    study: its minimum, or 0)."""
    image = volume.to_sitk()
    if orientation_code(volume.direction) != OBLIQUE:
        image = sitk.DICOMOrient(image, CANONICAL_CODE)
    if not Grid.of_image(image).matches(grid):
        interpolator = sitk.sitkNearestNeighbor if label else sitk.sitkBSpline
        outside = 0.0 if label else float(np.min(volume.array)) if volume.array.size else 0.0
        if not label:
            image = sitk.Cast(image, sitk.sitkFloat32)
        image = sitk.Resample(image, grid.reference(), sitk.Transform(), interpolator, outside,
                              image.GetPixelID())
    result = Volume.from_sitk(image)
    return volume.with_array(result.array, spacing=result.spacing, origin=result.origin,
                             direction=result.direction)


def scores_to_grid(scores: Iterable[np.ndarray], source: Grid, target: Grid) -> np.ndarray:
    """The argmax label map on `target` of per-class scores, each (z, y, x) on `source`.

    Each class's scores are brought onto the target grid (exactly, by reorientation, when the grids
    share their points; else linearly interpolated) and the labels taken after, never the labels
    interpolated. One class at a time keeps memory at two target-sized arrays.
    """
    z, y, x = target.size[::-1]
    best = np.full((z, y, x), -np.inf, dtype=np.float32)
    labels = np.zeros((z, y, x), dtype=np.uint8)
    for value, channel in enumerate(scores):
        moved = _onto(np.asarray(channel, dtype=np.float32), source, target)
        better = moved > best
        labels[better] = value
        np.maximum(best, moved, out=best)
    return labels


def _onto(channel: np.ndarray, source: Grid, target: Grid) -> np.ndarray:
    if source.matches(target):
        return channel
    image = sitk.GetImageFromArray(channel)
    image.SetSpacing(source.spacing)
    image.SetOrigin(source.origin)
    image.SetDirection(source.direction)
    code = orientation_code(target.direction)
    if code != OBLIQUE:
        oriented = sitk.DICOMOrient(image, code)
        if Grid.of_image(oriented).matches(target):
            return sitk.GetArrayFromImage(oriented)
    resampler = sitk.ResampleImageFilter()
    resampler.SetReferenceImage(target.reference())
    resampler.SetInterpolator(sitk.sitkLinear)
    resampler.SetOutputPixelType(sitk.sitkFloat32)
    resampler.SetUseNearestNeighborExtrapolator(True)  # voxels a rounded grid misses by a hair
    return sitk.GetArrayFromImage(resampler.Execute(image))


def _is_signed_permutation(matrix: np.ndarray) -> bool:
    rounded = np.round(matrix)
    return (np.allclose(matrix, rounded, atol=_ALIGNMENT_TOLERANCE)
            and np.allclose(np.abs(rounded).sum(axis=0), 1) and np.allclose(np.abs(rounded).sum(axis=1), 1))
