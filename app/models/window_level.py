"""Window/level (contrast) settings: presets for CT in Hounsfield units and an automatic window for MR."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# Values robust windows ignore at either end (percent), so a few hot voxels do not flatten the image.
AUTO_PERCENTILES = (1.0, 99.0)
# At most this many voxels are sampled to find an automatic window (large volumes are strided).
AUTO_SAMPLE = 1_000_000


@dataclass(frozen=True)
class WindowLevel:
    """Grey values from level - window/2 (black) to level + window/2 (white)."""

    window: float
    level: float

    def __post_init__(self) -> None:
        if not self.window > 0:
            raise ValueError(f"window must be positive, got {self.window}")

    @property
    def low(self) -> float:
        return self.level - self.window / 2

    @property
    def high(self) -> float:
        return self.level + self.window / 2

    def dragged(self, dx: float, dy: float, value_per_pixel: float) -> WindowLevel:
        """After a right-drag of (dx, dy) pixels: right widens the window, up raises the level."""
        window = max(value_per_pixel, self.window + dx * value_per_pixel)
        return WindowLevel(window, self.level - dy * value_per_pixel)


CT_PRESETS: dict[str, WindowLevel] = {
    "CT soft tissue": WindowLevel(400.0, 40.0),
    "CT lung": WindowLevel(1500.0, -600.0),
    "CT bone": WindowLevel(1800.0, 400.0),
}
AUTO_PRESET = "Auto (robust range)"
PRESET_NAMES = (*CT_PRESETS, AUTO_PRESET)


def auto_window(array: np.ndarray) -> WindowLevel:
    """The 1st to 99th percentile of the voxel values: a good start for MR, whose values have no unit."""
    flat = np.asarray(array).ravel()
    if flat.size > AUTO_SAMPLE:
        flat = flat[:: flat.size // AUTO_SAMPLE + 1]
    finite = flat[np.isfinite(flat)] if np.issubdtype(flat.dtype, np.floating) else flat
    if finite.size == 0:
        return WindowLevel(1.0, 0.5)
    low, high = (float(v) for v in np.percentile(finite, AUTO_PERCENTILES))
    if high <= low:
        low, high = float(finite.min()), float(finite.max())
    window = max(high - low, 1e-6)
    return WindowLevel(window, (low + high) / 2)


def default_window(array: np.ndarray, modality: str) -> WindowLevel:
    """The window a study opens with: soft tissue for CT, the robust range otherwise."""
    return CT_PRESETS["CT soft tissue"] if modality == "ct" else auto_window(array)


def preset_window(name: str, array: np.ndarray) -> WindowLevel:
    """A named preset from PRESET_NAMES (the automatic one is computed from `array`)."""
    if name == AUTO_PRESET:
        return auto_window(array)
    if name not in CT_PRESETS:
        raise KeyError(f"unknown window preset {name!r}; choose one of {', '.join(PRESET_NAMES)}")
    return CT_PRESETS[name]
