"""How a phantom is scanned and stored: the voxel grid laid over the body, the axes it is stored along
and the file format. Hospitals differ in all three while the body stays where it is, so a site's
demo data can look like its own scanner's studies.

The body frame of shapes.py is tied to millimetres here: x = 200 u and y = 200 v (LPS, centred on
the table axis), z = 100 t plus the centre of the reference stack of slices (see scan_grid).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk

from segmentation.errors import ConfigError
from segmentation.volume import Volume

FIELD_OF_VIEW_MM = 400.0  # default in-plane extent; `size` pixels span it when no spacing is given
CRANIOCAUDAL_MM = 200.0  # extent along the slices of a 3D phantom
SINGLE_SLICE_MM = 5.0  # slice thickness of a 2D phantom without a spacing
FILE_FORMATS = ("nifti", "dicom")
FIELD_OF_VIEW_RANGE_MM = (100.0, 1000.0)
MIN_PIXELS = 16  # across each in-plane axis
MAX_VOXELS = 2**26  # 512 x 512 x 256: the tissue map and its float coordinates stay within a few GB

_OPPOSITE = {"L": "R", "R": "L", "P": "A", "A": "P", "S": "I", "I": "S"}


def check_orientation(code: str) -> str:
    """`code` in capitals when it names the R/L, A/P and S/I axes once each; ConfigError otherwise."""
    upper = str(code).upper()
    if len(upper) != 3 or not np.any(orientation_direction(upper)):
        raise ConfigError(f"orientation must be 3 letters, one each of R/L, A/P and S/I (e.g. LPS, RAS, "
                          f"PIR), got {code!r}")
    return upper


def orientation_direction(code: str) -> np.ndarray:
    """The 3x3 direction matrix (columns: the storage axes in LPS) of an orientation code, as SimpleITK's
    DICOMOrient reads it; all zeros for a code that is not one."""
    return np.reshape(sitk.DICOMOrientImageFilter_GetDirectionCosinesFromOrientation(code), (3, 3))


def is_right_handed(code: str) -> bool:
    """Whether the third storage axis is the first cross the second, as a DICOM slice normal is."""
    return bool(np.linalg.det(orientation_direction(code)) > 0)


@dataclass(frozen=True)
class PhantomGeometry:
    """How a site's scanner lays out its studies; the defaults are the phantom's original layout.

    orientation: SimpleITK DICOMOrient code of the storage axes ("LPS": identity direction; "RAS";
    "PIR" stores sagittal slices). spacing: voxel size (x, y, z) in mm; None keeps `size` pixels
    across 400 mm. field_of_view_mm: the in-plane extent. file_format: "nifti" image files or
    "dicom" series folders (labels are NIfTI either way).
    """

    orientation: str = "LPS"
    spacing: tuple[float, float, float] | None = None
    field_of_view_mm: float = FIELD_OF_VIEW_MM
    file_format: str = "nifti"

    def __post_init__(self) -> None:
        object.__setattr__(self, "orientation", check_orientation(self.orientation))
        if self.spacing is not None:
            object.__setattr__(self, "spacing", _checked_spacing(self.spacing))
        low, high = FIELD_OF_VIEW_RANGE_MM
        if not low <= self.field_of_view_mm <= high:  # NaN fails here too
            raise ConfigError(f"field of view must be between {low:g} and {high:g} mm, got "
                              f"{self.field_of_view_mm:g}")
        if self.file_format not in FILE_FORMATS:
            choices = ", ".join(FILE_FORMATS)
            raise ConfigError(f"file format must be one of {choices}, got {self.file_format!r}")
        if self.file_format == "dicom" and not is_right_handed(self.orientation):
            flipped = self.orientation[:2] + _OPPOSITE[self.orientation[2]]
            raise ConfigError(f"orientation {self.orientation} is left-handed, which a DICOM series cannot "
                              f"store (its slice normal is row x column); use {flipped} or NIfTI")

    def describe(self) -> str:
        """A summary for dataset.json, e.g. 'PIR, 0.8 x 0.8 x 2.5 mm voxels, 400 mm field of view, dicom'."""
        sizes = "size-derived" if self.spacing is None else " x ".join(f"{s:g}" for s in self.spacing)
        voxels = f"{sizes} voxels" if self.spacing is None else f"{sizes} mm voxels"
        return f"{self.orientation}, {voxels}, {self.field_of_view_mm:g} mm field of view, {self.file_format}"


DEFAULT_GEOMETRY = PhantomGeometry()


def _checked_spacing(spacing: tuple[float, float, float]) -> tuple[float, float, float]:
    """Three finite, positive voxel sizes as floats; ConfigError otherwise."""
    try:
        x, y, z = (float(value) for value in spacing)
    except (TypeError, ValueError):
        x = y = z = math.nan
    if not all(math.isfinite(value) and value > 0 for value in (x, y, z)):
        raise ConfigError(f"spacing must be three positive voxel sizes in mm (x, y, z), got {spacing}")
    return x, y, z


@dataclass(frozen=True)
class ScanGrid:
    """A phantom's voxel grid in LPS storage, in SimpleITK's (x, y, z) order, and how far it reaches
    either way in body-frame units (`span` 1.0: the default 400 mm, and 200 mm along z)."""

    shape: tuple[int, int, int]
    spacing: tuple[float, float, float]
    origin: tuple[float, float, float]
    span: tuple[float, float, float]


def scan_grid(size: int, depth: int, geometry: PhantomGeometry = DEFAULT_GEOMETRY) -> ScanGrid:
    """The grid `geometry` lays over the body of the reference grid: `size` pixels across 400 mm and
    `depth` slices across 200 mm (1: a single axial slice).

    Without a spacing the reference voxels are kept and a wider field of view adds more of them.
    The grid is centred in-plane on the table axis and along z on the reference stack's centre, so
    the anatomy keeps its size and place at every spacing and field of view; the default geometry
    gives the reference grid itself, computed exactly as it always was.
    """
    reference_pixel = FIELD_OF_VIEW_MM / size
    reference_slice = CRANIOCAUDAL_MM / depth if depth > 1 else SINGLE_SLICE_MM
    fov = geometry.field_of_view_mm
    if geometry.spacing is None:
        spacing = (reference_pixel, reference_pixel, reference_slice)
        columns = rows = round(fov / reference_pixel)
        shape = (columns, rows, depth)
        span = (columns / size, rows / size, 1.0)  # exactly 1.0 at the default field of view
    else:
        spacing = geometry.spacing
        slices = round(CRANIOCAUDAL_MM / spacing[2]) if depth > 1 else 1
        shape = (round(fov / spacing[0]), round(fov / spacing[1]), slices)
        span = (shape[0] * spacing[0] / FIELD_OF_VIEW_MM, shape[1] * spacing[1] / FIELD_OF_VIEW_MM,
                shape[2] * spacing[2] / CRANIOCAUDAL_MM)
    _check_grid(shape, depth, geometry.orientation)
    origin = (
        -span[0] * FIELD_OF_VIEW_MM / 2 + spacing[0] / 2,
        -span[1] * FIELD_OF_VIEW_MM / 2 + spacing[1] / 2,
        ((depth - 1) * reference_slice - (shape[2] - 1) * spacing[2]) / 2,
    )
    return ScanGrid(shape, spacing, origin, span)


def _check_grid(shape: tuple[int, int, int], depth: int, orientation: str) -> None:
    """Refuse a grid too small to show organs, too big to render, or a single slice stored sideways."""
    columns, rows, slices = shape
    if min(columns, rows) < MIN_PIXELS:
        raise ConfigError(f"the phantom would be {columns} x {rows} pixels in-plane; it needs at least "
                          f"{MIN_PIXELS} each way: choose a finer spacing or a wider field of view")
    if depth > 1 and slices < 2:
        raise ConfigError(f"a 3D phantom needs at least 2 slices across {CRANIOCAUDAL_MM:g} mm; choose a "
                          "finer z spacing")
    if columns * rows * slices > MAX_VOXELS:
        raise ConfigError(f"the phantom would be {columns} x {rows} x {slices} voxels, more than the "
                          f"{MAX_VOXELS:,} it renders: choose a coarser spacing or a smaller field of view")
    if depth == 1 and orientation[2] not in "SI":
        raise ConfigError(f"a 2D phantom is one axial slice, so its orientation must end in S or I (axial "
                          f"slices), got {orientation}")


def orient(volume: Volume, orientation: str) -> Volume:
    """The same voxels at the same physical places, stored along the axes `orientation` names
    (an exact permutation and flip of the array; no interpolation)."""
    image = sitk.DICOMOrient(volume.to_sitk(), orientation)
    return Volume.from_sitk(image, volume.modality, volume.labels)
