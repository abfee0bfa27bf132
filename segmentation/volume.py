"""One volume type for every format: voxels plus the geometry that places them in the patient.

Arrays are indexed (z, y, x) as SimpleITK's GetArrayFromImage returns them; spacing, origin and
direction follow SimpleITK's (x, y, z) order, so converting either way never reorders anything.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
import SimpleITK as sitk

# Modality tags used across the project. DICOM says "CT" or "MR"; the demo data distinguishes MR
# sequences because their tissue contrast differs as much as CT's does from MR's.
MODALITIES = ("ct", "mr", "mr-t1", "mr-t2", "unknown")

IDENTITY_DIRECTION = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)


def normalize_modality(tag: str | None) -> str:
    """Map a DICOM Modality value or a user tag to one of MODALITIES."""
    value = (tag or "").strip().lower().replace("_", "-")
    aliases = {"mri": "mr", "t1": "mr-t1", "t2": "mr-t2", "mr-t1w": "mr-t1", "mr-t2w": "mr-t2"}
    value = aliases.get(value, value)
    return value if value in MODALITIES else "unknown"


@dataclass(frozen=True)
class Volume:
    """A 3D image or label map with its physical geometry.

    `labels` maps label values to names for label maps and is empty for images. `warnings` holds
    non-fatal findings of the reader (e.g. an accepted non-uniform slice spacing).
    """

    array: np.ndarray
    spacing: tuple[float, float, float] = (1.0, 1.0, 1.0)
    origin: tuple[float, float, float] = (0.0, 0.0, 0.0)
    direction: tuple[float, ...] = IDENTITY_DIRECTION
    modality: str = "unknown"
    labels: dict[int, str] = field(default_factory=dict)
    warnings: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.array.ndim != 3:
            raise ValueError(f"a Volume needs a 3D (z, y, x) array, got shape {self.array.shape}")
        if len(self.spacing) != 3 or len(self.origin) != 3 or len(self.direction) != 9:
            raise ValueError("spacing and origin need 3 values and direction 9")
        object.__setattr__(self, "modality", normalize_modality(self.modality))

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.array.shape)  # type: ignore[return-value]

    def with_array(self, array: np.ndarray, **changes) -> Volume:
        """The same geometry around another array (e.g. a predicted mask)."""
        return replace(self, array=array, **changes)

    def to_sitk(self) -> sitk.Image:
        image = sitk.GetImageFromArray(np.ascontiguousarray(self.array))
        image.SetSpacing(tuple(float(v) for v in self.spacing))
        image.SetOrigin(tuple(float(v) for v in self.origin))
        image.SetDirection(tuple(float(v) for v in self.direction))
        return image

    @classmethod
    def from_sitk(
        cls, image: sitk.Image, modality: str = "unknown", labels: dict[int, str] | None = None,
        warnings: tuple[str, ...] = (),
    ) -> Volume:
        if image.GetDimension() == 2:
            image = sitk.JoinSeries(image)
        if image.GetDimension() != 3:
            raise ValueError(f"expected a 2D or 3D image, got {image.GetDimension()}D")
        if image.GetNumberOfComponentsPerPixel() != 1:
            raise ValueError("multi-component (e.g. RGB) images are not segmentable volumes")
        return cls(
            array=sitk.GetArrayFromImage(image),
            spacing=tuple(image.GetSpacing()),
            origin=tuple(image.GetOrigin()),
            direction=tuple(image.GetDirection()),
            modality=modality,
            labels=dict(labels or {}),
            warnings=warnings,
        )

    def geometry_differences(self, other: Volume, tolerance: float = 1e-3) -> list[str]:
        """Human-readable differences in size, spacing, origin and direction (empty if none)."""
        differences = []
        if self.shape != other.shape:
            differences.append(f"size {self.shape} vs {other.shape}")
        for name in ("spacing", "origin", "direction"):
            a, b = np.asarray(getattr(self, name)), np.asarray(getattr(other, name))
            if not np.allclose(a, b, atol=tolerance, rtol=tolerance):
                fmt = lambda v: "(" + ", ".join(f"{x:g}" for x in v) + ")"  # noqa: E731
                differences.append(f"{name} {fmt(a)} vs {fmt(b)}")
        return differences
