"""Display geometry: any volume shown the radiological way, whatever order its voxels are stored in.

A volume is first viewed in a canonical voxel order (slices inferior->superior, rows anterior->
posterior, columns right->left of the patient, i.e. increasing LPS coordinates), using its
direction matrix. Axial views then show anterior up and the patient's left on the right; coronal and
sagittal views show superior up. Everything here returns numpy views: nothing is copied.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

import numpy as np


class ViewAxis(Enum):
    """The three orthogonal views; the value is the canonical array axis the view slices through."""

    AXIAL = 0
    CORONAL = 1
    SAGITTAL = 2

    @property
    def title(self) -> str:
        return self.name.capitalize()


@dataclass(frozen=True)
class Reorientation:
    """How a stored (z, y, x) array becomes canonical: transpose by `axes`, then flip where `flips`.

    Canonical axis i is stored axis axes[i]; it runs along patient axis S, P, L for i = 0, 1, 2.
    """

    axes: tuple[int, int, int] = (0, 1, 2)
    flips: tuple[bool, bool, bool] = (False, False, False)

    @classmethod
    def from_direction(cls, direction: tuple[float, ...]) -> Reorientation:
        """The reorientation for a SimpleITK row-major direction matrix (closest patient axes).

        Oblique volumes snap to their nearest patient axes; a matrix whose axes cannot be told apart
        keeps the stored order.
        """
        matrix = np.asarray(direction, float).reshape(3, 3)
        axes, flips = [0, 0, 0], [False, False, False]
        for stored in range(3):  # stored array axis z, y, x is SimpleITK index axis 2, 1, 0
            column = matrix[:, 2 - stored]
            patient = int(np.argmax(np.abs(column)))  # 0: L, 1: P, 2: S
            canonical = 2 - patient
            axes[canonical] = stored
            flips[canonical] = bool(column[patient] < 0)
        if sorted(axes) != [0, 1, 2]:
            return cls()
        return cls(tuple(axes), tuple(flips))  # type: ignore[arg-type]

    def apply(self, array: np.ndarray) -> np.ndarray:
        """The canonical view of a stored array (a numpy view, no copy)."""
        view = np.transpose(array, self.axes)
        flips = tuple(slice(None, None, -1) if flip else slice(None) for flip in self.flips)
        return view[flips]

    def canonical_spacing(self, spacing: tuple[float, float, float]) -> tuple[float, float, float]:
        """Voxel size (mm) along the canonical axes, from SimpleITK's (x, y, z) spacing."""
        stored = (spacing[2], spacing[1], spacing[0])
        return tuple(stored[axis] for axis in self.axes)  # type: ignore[return-value]

    def stored_index(self, canonical: tuple[int, int, int], stored_shape: tuple[int, ...]) -> tuple[int, ...]:
        """The stored (z, y, x) index of a canonical voxel index."""
        index = [0, 0, 0]
        for position, (axis, flip) in enumerate(zip(self.axes, self.flips, strict=True)):
            value = canonical[position]
            index[axis] = stored_shape[axis] - 1 - value if flip else value
        return tuple(index)


def view_slice(canonical: np.ndarray, axis: ViewAxis, index: int) -> np.ndarray:
    """The 2D image a view shows at slice `index`, rows top to bottom, columns left to right."""
    if axis is ViewAxis.AXIAL:
        return canonical[index, :, :]
    if axis is ViewAxis.CORONAL:
        return canonical[::-1, index, :]
    return canonical[::-1, :, index]


def view_voxel(
    shape: tuple[int, int, int], axis: ViewAxis, index: int, row: int, column: int
) -> tuple[int, int, int]:
    """The canonical (z, y, x) voxel under pixel (row, column) of a view at slice `index`."""
    if axis is ViewAxis.AXIAL:
        return index, row, column
    if axis is ViewAxis.CORONAL:
        return shape[0] - 1 - row, index, column
    return shape[0] - 1 - row, column, index


def view_pixel(shape: tuple[int, int, int], axis: ViewAxis, voxel: tuple[int, int, int]) -> tuple[int, int]:
    """The (row, column) at which a view shows a canonical voxel (the inverse of view_voxel)."""
    z, y, x = voxel
    if axis is ViewAxis.AXIAL:
        return y, x
    if axis is ViewAxis.CORONAL:
        return shape[0] - 1 - z, x
    return shape[0] - 1 - z, y


def view_pixel_size(spacing: tuple[float, float, float], axis: ViewAxis) -> tuple[float, float]:
    """(row height, column width) in mm of a view's pixels, from the canonical spacing."""
    z, y, x = spacing
    if axis is ViewAxis.AXIAL:
        return y, x
    if axis is ViewAxis.CORONAL:
        return z, x
    return z, y


# Patient directions at the (top, bottom, left, right) edges of each view, for the corner markers.
EDGE_LABELS: dict[ViewAxis, tuple[str, str, str, str]] = {
    ViewAxis.AXIAL: ("A", "P", "R", "L"),
    ViewAxis.CORONAL: ("S", "I", "R", "L"),
    ViewAxis.SAGITTAL: ("S", "I", "A", "P"),
}


def orientation_code(direction: tuple[float, ...]) -> str:
    """Three letters naming where the stored x, y, z axes point, e.g. 'LPS' for DICOM's usual axial order."""
    matrix = np.asarray(direction, float).reshape(3, 3)
    letters = (("R", "L"), ("A", "P"), ("I", "S"))
    code = ""
    for index_axis in range(3):
        column = matrix[:, index_axis]
        patient = int(np.argmax(np.abs(column)))
        code += letters[patient][int(column[patient] > 0)]
    return code
