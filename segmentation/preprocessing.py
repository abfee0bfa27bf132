"""Intensity and size preprocessing shared by training, evaluation and inference.

Training and inference must see identical inputs, so both go through these functions, and the
settings travel inside every checkpoint.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class Preprocessing:
    """How a volume becomes network input: percentile window to [0, 1], slices resized.

    2D networks see (H, W) = image_size slices; 3D networks see the whole volume resized to
    (depth, H, W). With `modality_statistics` (domain-specific normalization, a
    segmentation.transforms.ModalityStatistics dict) each image is instead z-scored with its
    modality's statistics, so training, evaluation and inference normalize alike.
    """

    image_size: tuple[int, int] = (96, 96)
    lower_percentile: float = 0.5
    upper_percentile: float = 99.5
    depth: int = 32
    modality_statistics: dict[str, Any] | None = field(default=None, hash=False)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> Preprocessing:
        return cls(
            image_size=tuple(int(v) for v in data["image_size"]),
            lower_percentile=float(data["lower_percentile"]),
            upper_percentile=float(data["upper_percentile"]),
            depth=int(data.get("depth", cls.depth)),
            modality_statistics=data.get("modality_statistics"),
        )


def normalize_intensity(array: np.ndarray, settings: Preprocessing, modality: str = "unknown") -> np.ndarray:
    """Clip to the volume's own percentile window and scale to [0, 1] (modality-agnostic), or z-score
    with the modality's statistics when the settings carry them."""
    if settings.modality_statistics is not None:
        from segmentation.transforms.dsn import DomainSpecificNormalization, ModalityStatistics

        statistics = ModalityStatistics.from_dict(settings.modality_statistics)
        return DomainSpecificNormalization(statistics)(np.asarray(array), modality)
    data = np.asarray(array, dtype=np.float32)
    low, high = np.percentile(data, [settings.lower_percentile, settings.upper_percentile])
    if high <= low:
        return np.zeros_like(data)
    return np.clip((data - low) / (high - low), 0.0, 1.0).astype(np.float32)


def image_to_slices(array: np.ndarray, settings: Preprocessing, modality: str = "unknown") -> torch.Tensor:
    """A (z, y, x) volume -> normalized (z, 1, H, W) float32 slices at the network's size."""
    slices = torch.from_numpy(normalize_intensity(array, settings, modality)).unsqueeze(1)
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


def image_to_volume(array: np.ndarray, settings: Preprocessing, modality: str = "unknown") -> torch.Tensor:
    """A (z, y, x) volume -> normalized (1, 1, depth, H, W) float32 input of a 3D network."""
    volume = torch.from_numpy(normalize_intensity(array, settings, modality))[None, None]
    size = (settings.depth, *settings.image_size)
    if tuple(volume.shape[-3:]) == size:
        return volume
    return F.interpolate(volume, size=size, mode="trilinear", align_corners=False)


def label_to_volume(array: np.ndarray, settings: Preprocessing) -> torch.Tensor:
    """A (z, y, x) label map -> (1, 1, depth, H, W) int64 labels of a 3D network (nearest)."""
    labels = torch.from_numpy(np.asarray(array, dtype=np.int64))[None, None]
    size = (settings.depth, *settings.image_size)
    if tuple(labels.shape[-3:]) == size:
        return labels
    return F.interpolate(labels.float(), size=size, mode="nearest-exact").long()


def network_input(
    array: np.ndarray, settings: Preprocessing, spatial_dims: int, modality: str = "unknown"
) -> torch.Tensor:
    """The one way a (z, y, x) image becomes a batch for a 2D (slices) or 3D (whole volume) network."""
    if spatial_dims == 2:
        return image_to_slices(array, settings, modality)
    return image_to_volume(array, settings, modality)


def network_target(array: np.ndarray, settings: Preprocessing, spatial_dims: int) -> torch.Tensor:
    """The label map matching network_input, sample for sample."""
    return label_to_slices(array, settings) if spatial_dims == 2 else label_to_volume(array, settings)


def logits_to_label(logits: torch.Tensor, shape: tuple[int, int, int]) -> np.ndarray:
    """(z, C, H, W) slice logits or (1, C, D, H, W) volume logits -> (z, y, x) uint8 label map in
    the volume's own size."""
    if logits.ndim == 5:
        if tuple(logits.shape[-3:]) != tuple(shape):
            logits = F.interpolate(logits, size=shape, mode="trilinear", align_corners=False)
        return logits.argmax(dim=1)[0].to(torch.uint8).cpu().numpy()
    if tuple(logits.shape[-2:]) != tuple(shape[1:]):
        logits = F.interpolate(logits, size=shape[1:], mode="bilinear", align_corners=False)
    return logits.argmax(dim=1).to(torch.uint8).cpu().numpy()
