"""DICOM-SEG export of a predicted mask, referencing the DICOM series it was computed from.

A DICOM-SEG lets PACS and viewers (3D Slicer, OHIF) show the mask over the original study. NIfTI,
NRRD and MHA masks need nothing of their own: segmentation.io.write_volume writes any Volume.

Every foreground label of the model becomes one segment (segment number = label value), including
labels the model found nowhere: the reader then knows the model looked for that structure. The SEG
is BINARY, the type viewers read most widely, with one frame per source slice for every segment.
"""

from __future__ import annotations

from collections.abc import Sequence
from importlib import metadata
from pathlib import Path

import highdicom as hd
import numpy as np
from pydicom import Dataset
from pydicom.sr.codedict import codes

from segmentation.errors import FedSegError, GeometryMismatchError, first_line
from segmentation.volume import Volume

# A model's labels are anatomy it learned, without a finer code for what each one is.
SEGMENT_CATEGORY = codes.SCT.AnatomicalStructure
SEGMENT_TYPE = codes.SCT.Organ
DEFAULT_SERIES_NUMBER = 900
# Values of DICOM's LO (long string) attributes such as SegmentLabel hold at most 64 characters.
MAX_LABEL_LENGTH = 64
# How far (mm) the mask's origin may lie from the first source slice's position.
POSITION_TOLERANCE_MM = 0.01


def write_dicom_seg(
    mask: Volume,
    source_datasets: Sequence[Dataset],
    path: str | Path,
    labels: dict[int, str] | None = None,
    algorithm_name: str = "FedSeg Workbench",
    series_description: str = "FedSeg segmentation",
    series_number: int = DEFAULT_SERIES_NUMBER,
) -> Path:
    """Write `mask` (z, y, x, in the order of `source_datasets`) as a DICOM-SEG file; return its path.

    `labels` (default: the mask's own) names the values; 0 is background and the others must be
    1..N, which is what a model's argmax produces.
    """
    labels = dict(mask.labels if labels is None else labels)
    _check_matches_source(mask, source_datasets)
    foreground = _foreground_labels(mask.array, labels)
    algorithm = hd.AlgorithmIdentificationSequence(
        name=algorithm_name, version=_software_version(), family=codes.cid7162.ArtificialIntelligence,
    )
    descriptions = [
        hd.seg.SegmentDescription(
            segment_number=value,
            segment_label=name[:MAX_LABEL_LENGTH],
            segmented_property_category=SEGMENT_CATEGORY,
            segmented_property_type=SEGMENT_TYPE,
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
            algorithm_identification=algorithm,
        )
        for value, name in foreground.items()
    ]
    try:
        seg = hd.seg.Segmentation(
            source_images=[_with_slice_thickness(ds, mask.spacing[2]) for ds in source_datasets],
            pixel_array=np.asarray(mask.array, dtype=np.uint16 if max(foreground) > 255 else np.uint8),
            segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
            segment_descriptions=descriptions,
            series_instance_uid=hd.UID(),
            series_number=series_number,
            sop_instance_uid=hd.UID(),
            instance_number=1,
            manufacturer="FedSeg Workbench",
            manufacturer_model_name=algorithm_name,
            software_versions=_software_version(),
            device_serial_number="none",
            omit_empty_frames=False,
            series_description=series_description,
            content_label="FEDSEG",
            content_description=f"Automatic segmentation by {algorithm_name}",
        )
    except (ValueError, TypeError, AttributeError, KeyError) as error:  # the source lacks what SEG needs
        raise FedSegError(f"cannot build a DICOM-SEG from this series: {first_line(error)}") from None
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    seg.save_as(path)
    return path


def _check_matches_source(mask: Volume, source_datasets: Sequence[Dataset]) -> None:
    """The mask must have one slice per source image, their size, and start where they start."""
    if not source_datasets:
        raise FedSegError("DICOM-SEG needs the DICOM datasets of the source series")
    first = source_datasets[0]
    source_shape = (len(source_datasets), int(first.Rows), int(first.Columns))
    if mask.shape != source_shape:
        raise GeometryMismatchError(
            f"the mask's size {mask.shape} differs from the source series' {source_shape} "
            "(slices, rows, columns)"
        )
    position = first.get("ImagePositionPatient")
    if position is not None and not np.allclose(
        [float(v) for v in position], mask.origin, atol=POSITION_TOLERANCE_MM, rtol=0.0,
    ):
        raise GeometryMismatchError(
            "the mask's first slice is not the source series' first slice; "
            "pass the datasets in the mask's order"
        )


def _foreground_labels(array: np.ndarray, labels: dict[int, str]) -> dict[int, str]:
    """Non-background labels, checked to be 1..N and to cover every value in the mask."""
    foreground = {value: name for value, name in sorted(labels.items()) if value != 0}
    if not foreground:
        raise FedSegError("DICOM-SEG needs at least one foreground label; the labels name only background")
    if list(foreground) != list(range(1, len(foreground) + 1)):
        raise FedSegError(f"DICOM-SEG needs foreground labels numbered 1..N, got {list(foreground)}")
    unnamed = sorted(set(np.unique(array).tolist()) - set(foreground) - {0})
    if unnamed:
        raise FedSegError(f"the mask holds values {unnamed} that have no label name")
    return foreground


def _with_slice_thickness(dataset: Dataset, thickness: float) -> Dataset:
    """The dataset, or a shallow copy with SliceThickness filled in from the mask's z spacing.

    highdicom copies the source's pixel measures and needs SliceThickness, a type 2 attribute
    (present, possibly empty) that series written by other tools often leave out.
    """
    if dataset.get("SliceThickness") not in (None, ""):
        return dataset
    copy = Dataset()
    copy.update(dataset)  # new element dict: the caller's dataset stays as it was
    copy.SliceThickness = float(thickness)
    return copy


def _software_version() -> str:
    try:
        return metadata.version("fedseg-workbench")
    except metadata.PackageNotFoundError:
        return "unknown"
