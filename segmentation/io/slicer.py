"""3D Slicer segmentations (.seg.nrrd) as label volumes whose label names are the segment names.

A segment's label value is the N of its ID "Segment_N" (Slicer's own IDs; the writer names segment
value N so), else segments become labels 1..N in the file's order. Slicer stores overlapping segments
in separate layers; a label map cannot, so later segments win and the Volume carries a warning.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import slicerio

from segmentation.errors import StudyReadError, UnsupportedFormatError, first_line
from segmentation.volume import Volume

BACKGROUND = 0
_SEGMENT_ID = re.compile(r"Segment_(\d+)")


def read_slicer_segmentation(path: Path) -> Volume:
    """Read a .seg.nrrd file into a label Volume with {label: segment name}."""
    try:
        segmentation = slicerio.read_segmentation(str(path))
    except Exception as error:  # noqa: BLE001 - slicerio/pynrrd raise many types on damaged files
        raise StudyReadError(f"{path} is not a readable Slicer segmentation: {first_line(error)}") from None
    segments = segmentation.get("segments", [])
    spatial_shape = segmentation["voxels"].shape[-3:]
    dtype = np.uint8 if max(_label_values(segments), default=0) < 256 else np.uint16
    labelmap = np.zeros(spatial_shape, dtype)
    labels, overlapping = {}, 0
    for value, segment in zip(_label_values(segments), segments, strict=True):
        mask = slicerio.segment_mask(segmentation, segment)
        overlapping += int(np.count_nonzero(labelmap[mask]))
        labelmap[mask] = value
        labels[value] = str(segment.get("name") or segment.get("id") or f"segment {value}")
    warnings = ()
    if overlapping:
        warnings = (f"{path}: {overlapping} voxel(s) belong to several segments; the last segment wins",)
    spacing, origin, direction = _geometry(np.asarray(segmentation["ijkToLPS"], float))
    return Volume(
        array=np.ascontiguousarray(labelmap.transpose(2, 1, 0)),  # slicerio's (i, j, k) -> (z, y, x)
        spacing=spacing, origin=origin, direction=direction, labels=labels, warnings=warnings,
    )


def write_slicer_segmentation(volume: Volume, path: Path) -> None:
    """Write a label Volume as a .seg.nrrd with one segment per label value present or named."""
    if not np.issubdtype(volume.array.dtype, np.integer) or (volume.array.size and volume.array.min() < 0):
        raise UnsupportedFormatError(f"cannot write {path}: a Slicer segmentation needs a label map "
                                     "(non-negative integers)")
    ijk_to_lps = np.eye(4)
    ijk_to_lps[:3, :3] = np.asarray(volume.direction, float).reshape(3, 3) * np.asarray(volume.spacing, float)
    ijk_to_lps[:3, 3] = volume.origin
    voxels = np.asarray(volume.array).transpose(2, 1, 0)  # (z, y, x) -> slicerio's (i, j, k)
    segmentation = slicerio.create_segmentation(voxels.shape, ijk_to_lps)
    present = {int(v) for v in np.unique(voxels)}
    for value in sorted((present | set(volume.labels)) - {BACKGROUND}):  # background is no segment
        name = volume.labels.get(value, f"label {value}")
        slicerio.add_segment(segmentation, voxels == value, {"id": f"Segment_{value}", "name": name})
    slicerio.write_segmentation(str(path), segmentation)


def _label_values(segments: list[dict]) -> list[int]:
    """Each segment's label value: the N of its ID "Segment_N" (how Slicer and write_slicer_segmentation
    name segments, so values survive a round trip) when every segment has a distinct one, else 1..N in
    the file's order."""
    numbers = [_SEGMENT_ID.fullmatch(str(segment.get("id", ""))) for segment in segments]
    values = [int(match.group(1)) for match in numbers if match]
    if len(values) == len(segments) and len(set(values)) == len(values) and all(values):
        return values
    return list(range(1, len(segments) + 1))


def _geometry(ijk_to_lps: np.ndarray) -> tuple[tuple[float, ...], tuple[float, ...], tuple[float, ...]]:
    """Spacing, origin and row-major direction from a 4x4 voxel-to-LPS matrix."""
    axes = ijk_to_lps[:3, :3]
    spacing = np.linalg.norm(axes, axis=0)
    direction = axes / spacing
    return tuple(spacing.tolist()), tuple(ijk_to_lps[:3, 3].tolist()), tuple(direction.ravel().tolist())

