"""Decode DICOM pixel data and rescale it to modality values (Hounsfield units for CT).

Every way decoding fails becomes a typed error; a compressed image without a working decoder names
the package that adds one.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
from pydicom.pixels import pixel_array
from pydicom.uid import (
    UID,
    JPEG2000TransferSyntaxes,
    JPEGLSTransferSyntaxes,
    JPEGTransferSyntaxes,
    RLETransferSyntaxes,
)

from segmentation.errors import (
    MissingPixelDataError,
    NotDicomError,
    UnsupportedTransferSyntaxError,
    first_line,
)

_HINTS = (
    (JPEG2000TransferSyntaxes, "pip install pylibjpeg pylibjpeg-openjpeg"),
    (JPEGLSTransferSyntaxes, "pip install pyjpegls"),
    (JPEGTransferSyntaxes, "pip install pylibjpeg pylibjpeg-libjpeg"),
    (RLETransferSyntaxes, "pip install pylibjpeg pylibjpeg-rle"),
)
_FALLBACK_HINT = "pip install python-gdcm"
_PIXEL_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")


def decoder_hint(transfer_syntax: str) -> str:
    """The pip command that installs a pydicom decoder for `transfer_syntax`."""
    return next((hint for uids, hint in _HINTS if transfer_syntax in uids), _FALLBACK_HINT)


def decode_pixels(dataset: pydicom.Dataset, path: Path) -> np.ndarray:
    """The stored (not yet rescaled) 2D pixels of a single-frame image."""
    if not any(keyword in dataset for keyword in _PIXEL_KEYWORDS):
        raise MissingPixelDataError(f"{path} has no pixel data (DICOM {dataset.get('Modality', 'object')} "
                                    "without an image)")
    syntax = UID(dataset.file_meta.get("TransferSyntaxUID", ""))
    try:
        return pixel_array(dataset)
    except (RuntimeError, NotImplementedError) as error:
        if syntax.is_compressed:
            raise UnsupportedTransferSyntaxError(
                f"{path} is compressed as {syntax.name} and no installed decoder could read it; "
                f"install one with: {decoder_hint(syntax)}"
            ) from None
        raise NotDicomError(f"{path}: pixel data cannot be decoded ({first_line(error)})") from None
    except Exception as error:  # damaged pixel data fails in many ways; all mean the same to the user
        raise NotDicomError(f"{path} is truncated or corrupt: {first_line(error)}") from None


def drop_pixel_data(dataset: pydicom.Dataset) -> None:
    """Remove the pixel data element so that the dataset keeps only its headers."""
    for keyword in _PIXEL_KEYWORDS:
        if keyword in dataset:
            delattr(dataset, keyword)


def to_modality_values(stored: np.ndarray, datasets: list[pydicom.Dataset]) -> np.ndarray:
    """Apply each slice's RescaleSlope/Intercept to the (z, y, x) stored values.

    Integer slopes and intercepts keep an integer array (int16 when the values fit, as CT in HU
    does), anything else gives float32.
    """
    slopes = np.array([float(ds.get("RescaleSlope", 1) or 1) for ds in datasets])
    intercepts = np.array([float(ds.get("RescaleIntercept", 0) or 0) for ds in datasets])
    if np.all(slopes == 1) and np.all(intercepts == 0):
        return stored
    dtype = _integer_dtype(stored, slopes, intercepts)
    values = np.empty(stored.shape, dtype or np.float32)
    for index, (image, slope, intercept) in enumerate(zip(stored, slopes, intercepts, strict=True)):
        if dtype is None:
            values[index] = image * slope + intercept
        else:
            values[index] = image.astype(np.int32) * int(slope) + int(intercept)
    return values


def _integer_dtype(stored: np.ndarray, slopes: np.ndarray, intercepts: np.ndarray) -> type | None:
    """The smallest of int16/int32 that holds every rescaled value exactly, or None."""
    if np.any(slopes != np.round(slopes)) or np.any(intercepts != np.round(intercepts)):
        return None
    ends = np.concatenate([float(end) * slopes + intercepts for end in (stored.min(), stored.max())])
    for dtype in (np.int16, np.int32):
        if ends.min() >= np.iinfo(dtype).min and ends.max() <= np.iinfo(dtype).max:
            return dtype
    return None

