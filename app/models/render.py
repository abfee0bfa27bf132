"""Slice pixels for display: grey values through a window, label maps through a colour table.

Plain numpy producing 8-bit grey and 32-bit premultiplied ARGB pixels (the layout Qt's
Format_Grayscale8 and Format_ARGB32_Premultiplied images read without conversion), so the Qt view
only wraps and paints them.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from app.models.colors import RGB
from app.models.window_level import WindowLevel


@dataclass(frozen=True)
class LabelStyle:
    """How one label value is drawn."""

    value: int
    color: RGB
    visible: bool = True


def window_to_gray(image: np.ndarray, window: WindowLevel) -> np.ndarray:
    """A C-contiguous uint8 copy of a 2D slice: `window.low` and below black, `window.high` and up white."""
    scale = np.float32(255.0 / window.window)
    out = np.subtract(image, np.float32(window.low), dtype=np.float32)
    np.multiply(out, scale, out=out)
    np.clip(out, 0.0, 255.0, out=out)
    return np.ascontiguousarray(out, dtype=np.uint8)


def color_table(styles: Iterable[LabelStyle], opacity: float) -> np.ndarray:
    """A uint32 premultiplied-ARGB lookup table indexed by label value; hidden labels are transparent."""
    styles = list(styles)
    size = max((style.value for style in styles), default=0) + 1
    table = np.zeros(max(size, 256), np.uint32)
    alpha = int(round(255 * min(max(opacity, 0.0), 1.0)))
    for style in styles:
        if style.value <= 0 or not style.visible:
            continue
        r, g, b = (channel * alpha // 255 for channel in style.color)
        table[style.value] = (alpha << 24) | (r << 16) | (g << 8) | b
    return table


def labels_to_argb(labels: np.ndarray, table: np.ndarray) -> np.ndarray:
    """A C-contiguous uint32 ARGB image of a 2D label slice (values beyond the table are transparent)."""
    index = np.asarray(labels)
    if index.dtype != np.uint8 and index.size and (index.min() < 0 or index.max() >= table.size):
        index = np.where((index >= 0) & (index < table.size), index, 0)
    return np.ascontiguousarray(table[index])
