"""An opened study: the image volume and what the workbench shows and needs about it."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # Volume's module imports SimpleITK, which start-up does without
    from segmentation.volume import Volume


@dataclass(frozen=True)
class Study:
    """An image with its source, display name, metadata rows and (DICOM only) its slice headers.

    `dicom_datasets` are the source series' headers in the volume's slice order; a DICOM-SEG export
    references them. `dicom_seg_problem` says why this series cannot be exported as DICOM-SEG (e.g.
    "cannot be exported as DICOM-SEG: no Frame of Reference UID"), None when it can or is no DICOM.
    `details` are (field, value) rows for the metadata panel, shown locally only.
    """

    image: Volume
    source: Path
    name: str
    details: tuple[tuple[str, str], ...] = ()
    series_uid: str | None = None
    dicom_datasets: tuple[Any, ...] = ()
    dicom_seg_problem: str | None = None

    @property
    def is_dicom(self) -> bool:
        return bool(self.dicom_datasets)

    @property
    def can_export_dicom_seg(self) -> bool:
        """Whether a mask of this study can be written as a DICOM-SEG referencing its series."""
        return self.is_dicom and self.dicom_seg_problem is None

    @property
    def modality(self) -> str:
        return self.image.modality

    def with_modality(self, modality: str) -> Study:
        """The same study tagged with another modality (the Volume normalizes the tag)."""
        return replace(self, image=replace(self.image, modality=modality))


# segmentation.volume.MODALITIES with display names (literal: start-up does not import SimpleITK).
MODALITY_CAPTIONS = {"ct": "CT", "mr": "MR", "mr-t1": "MR T1", "mr-t2": "MR T2", "unknown": "Unknown"}
