"""Write a Volume as NIfTI, NRRD, MetaImage or a Slicer segmentation, chosen by the file extension."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from segmentation.errors import FedSegError, UnsupportedFormatError
from segmentation.io.formats import (
    NIFTI,
    SLICER_SEGMENTATION,
    WRITABLE_FORMATS,
    format_by_suffix,
    supported_formats_text,
)
from segmentation.io.slicer import write_slicer_segmentation
from segmentation.volume import Volume


def write_volume(volume: Volume, path: str | os.PathLike) -> Path:
    """Write `volume` (creating missing folders) and return the path written.

    Integer arrays (label maps) keep their integer type; boolean masks are stored as uint8. A
    ".seg.nrrd" file keeps the label names as Slicer segment names; other formats keep only values.
    """
    path = Path(path)
    fmt = format_by_suffix(path, WRITABLE_FORMATS)
    if fmt is None:
        supported = supported_formats_text(WRITABLE_FORMATS)
        raise UnsupportedFormatError(f"cannot write {path}: unknown extension; {supported}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise FedSegError(f"cannot create the folder {path.parent}: {error.strerror}") from None
    if not os.access(path.parent, os.W_OK):
        raise FedSegError(f"cannot write {path}: permission denied")
    array = volume.array.astype(np.uint8) if volume.array.dtype == bool else volume.array
    if fmt is SLICER_SEGMENTATION:
        write_slicer_segmentation(volume.with_array(array), path)
        return path
    try:
        sitk.WriteImage(volume.with_array(array).to_sitk(), str(path), useCompression=fmt is not NIFTI)
    except RuntimeError:
        raise FedSegError(f"cannot write {path} as {fmt.name} (disk full or read-only?)") from None
    return path
