"""Intensity and size preprocessing shared by training, evaluation and inference.

Training and inference must see identical inputs, so both go through these functions, and the
settings travel inside every checkpoint.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class Preprocessing:
    """How a volume becomes network input: percentile window to [0, 1], slices resized."""

    image_size: tuple[int, int] = (96, 96)
    lower_percentile: float = 0.5
    upper_percentile: float = 99.5

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> Preprocessing:
        return cls(
            image_size=tuple(int(v) for v in data["image_size"]),
            lower_percentile=float(data["lower_percentile"]),
            upper_percentile=float(data["upper_percentile"]),
        )


def normalize_intensity(array: np.ndarray, settings: Preprocessing) -> np.ndarray:
    """Clip to the volume's own percentile window and scale to [0, 1] (modality-agnostic)."""
    data = np.asarray(array, dtype=np.float32)
    low, high = np.percentile(data, [settings.lower_percentile, settings.upper_percentile])
    if high <= low:
        return np.zeros_like(data)
    return np.clip((data - low) / (high - low), 0.0, 1.0).astype(np.float32)


def image_to_slices(array: np.ndarray, settings: Preprocessing) -> torch.Tensor:
    """A (z, y, x) volume -> normalized (z, 1, H, W) float32 slices at the network's size."""
    slices = torch.from_numpy(normalize_intensity(array, settings)).unsqueeze(1)
    if tuple(slices.shape[-2:]) == settings.image_size:
        return slices
    return F.interpolate(slices, size=settings.image_size, mode="bilinear", align_corners=False)


def label_to_slices(array: np.ndarray, settings: Preprocessing) -> torch.Tensor:
    """A (z, y, x) label map -> (z, 1, H, W) int64 labels at the network's size (nearest)."""
    labels = torch.from_numpy(np.asarray(array, dtype=np.int64)).unsqueeze(1)
    if tuple(labels.shape[-2:]) == settings.image_size:
        return labels
    resized = F.interpolate(labels.float(), size=settings.image_size, mode="nearest-exact")
    return resized.long()


def logits_to_label(logits: torch.Tensor, shape: tuple[int, int, int]) -> np.ndarray:
    """(z, C, H, W) logits -> (z, y, x) uint8 label map in the volume's own in-plane size."""
    if tuple(logits.shape[-2:]) != tuple(shape[1:]):
        logits = F.interpolate(logits, size=shape[1:], mode="bilinear", align_corners=False)
    return logits.argmax(dim=1).to(torch.uint8).cpu().numpy()
