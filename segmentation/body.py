"""Where the patient is in a scan: the voxels above the threshold at the foot of the background's
histogram peak (the triangle method), and the box that holds them.

nnU-Net crops every study to its non-zero region before anything else; a CT's air is not zero, so the
body is found by a threshold instead, for CT and MR alike. Cropped to that box, a study looks the same
to the network (and to the intensity window) whatever field of view the scanner recorded around it.
The triangle method suits a scan's one dominant peak of air or background; Otsu's two-class split
would cut through a T2 body (dark tissue fell on the air's side in the demo's phantoms). Torch-free.
"""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk

# Voxels the threshold is computed from (an even sample of larger studies).
_SAMPLE = 4_000_000
# A split is trusted when the body holds between these shares of the voxels.
_BODY_SHARE = (0.01, 0.99)
# Voxels kept around the body's box on every side.
MARGIN = 2
# A plane of the box holds at least this share of the fullest plane's body voxels: stray noise voxels
# in the air, a few to a plane, never widen the box.
_STRAY_SHARE = 0.05


def body_threshold(array: np.ndarray) -> float | None:
    """The threshold between the body and its surroundings, or None when the scan shows no such split
    (a uniform image, or one that is all body)."""
    values = _sample(array)
    if values.size == 0 or values.min() == values.max():
        return None
    image = sitk.GetImageFromArray(values.reshape(1, 1, -1))
    triangle = sitk.TriangleThresholdImageFilter()
    triangle.SetInsideValue(0)
    triangle.SetOutsideValue(1)
    triangle.Execute(image)
    threshold = float(triangle.GetThreshold())
    share = float(np.mean(values > threshold))
    return threshold if _BODY_SHARE[0] <= share <= _BODY_SHARE[1] else None


def body_region(array: np.ndarray, also: np.ndarray | None = None) -> tuple[slice, ...]:
    """The box (one slice per axis) around the body with MARGIN voxels to spare, grown to hold every
    non-zero voxel of `also` (a label map) too; the whole array when no body stands out."""
    threshold = body_threshold(array)
    if threshold is None:
        return tuple(slice(0, side) for side in array.shape)
    inside = np.asarray(array) > threshold
    labelled = np.asarray(also) > 0 if also is not None else None
    region = []
    for axis, side in enumerate(inside.shape):
        others = tuple(a for a in range(inside.ndim) if a != axis)
        counts = inside.sum(axis=others)
        present = counts >= max(1, _STRAY_SHARE * counts.max())
        if labelled is not None:
            present |= labelled.any(axis=others)
        first, last = np.flatnonzero(present)[[0, -1]]
        region.append(slice(max(int(first) - MARGIN, 0), min(int(last) + 1 + MARGIN, side)))
    return tuple(region)


def body_values(array: np.ndarray) -> np.ndarray:
    """The intensities inside the body (of an even sample of a large study): the voxels above the body
    threshold, or every voxel (the whole array is the box) when no body stands out."""
    values = _sample(array)
    threshold = body_threshold(values)
    return values if threshold is None else values[values > threshold]


def _sample(array: np.ndarray) -> np.ndarray:
    """An even sample of at most about _SAMPLE voxels as float32 (converted after sampling: a large
    study is not copied whole)."""
    values = np.asarray(array).ravel()
    return (values[:: values.size // _SAMPLE] if values.size > _SAMPLE else values).astype(np.float32)
