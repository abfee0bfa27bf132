"""Domain-specific normalization (DSN): z-scoring with per-modality intensity statistics.

Not a random augmentation but a normalization applied identically at training and inference: every
image is z-scored with the mean and standard deviation of ITS modality's foreground intensities,
pooled over the training volumes of that modality, so CT (Hounsfield units) and MR (arbitrary units)
land on comparable scales. The statistics are a plain dict in a checkpoint. An image whose modality
the statistics have never seen (or "unknown") falls back to its own foreground statistics.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection, NdarrayOrTensor
from monai.transforms import MapTransform, Transform
from monai.transforms.utils_pytorch_numpy_unification import percentile
from monai.utils import convert_data_type

from segmentation.errors import ConfigError
from segmentation.moments import pooled_mean_std
from segmentation.volume import Volume, normalize_modality

DEFAULT_FOREGROUND_PERCENTILE = 5.0


@dataclass(frozen=True)
class IntensityStatistics:
    """Mean, population standard deviation and count of a set of foreground voxels."""

    mean: float
    std: float
    voxels: int

    @classmethod
    def of(cls, image: NdarrayOrTensor, foreground_percentile: float) -> IntensityStatistics:
        """Statistics of the voxels above the image's `foreground_percentile` (all if none is)."""
        values = image.reshape(-1)
        if isinstance(values, torch.Tensor):
            values = values.double()  # torch.quantile needs floats; numpy accumulates in float64 below
        foreground = values[values > percentile(values, foreground_percentile)]
        if foreground.shape[0] == 0:
            foreground = values
        if isinstance(foreground, torch.Tensor):
            mean, std = foreground.mean(), foreground.std(correction=0)
        else:
            mean, std = foreground.mean(dtype=np.float64), foreground.std(dtype=np.float64)
        return cls(float(mean), float(std), int(foreground.shape[0]))

    def combine(self, other: IntensityStatistics) -> IntensityStatistics:
        """Statistics of the union of both voxel sets."""
        return IntensityStatistics(*pooled_mean_std(self.mean, self.std, self.voxels,
                                                    other.mean, other.std, other.voxels))


@dataclass(frozen=True)
class ModalityStatistics:
    """Foreground intensity statistics per modality tag (see segmentation.volume.MODALITIES)."""

    by_modality: dict[str, IntensityStatistics] = field(default_factory=dict)
    foreground_percentile: float = DEFAULT_FOREGROUND_PERCENTILE

    def __post_init__(self) -> None:
        if not 0.0 <= self.foreground_percentile < 100.0:
            raise ConfigError(f"foreground_percentile must be in [0, 100), got {self.foreground_percentile}")

    @classmethod
    def fit(
        cls, volumes: Iterable[Volume], foreground_percentile: float = DEFAULT_FOREGROUND_PERCENTILE
    ) -> ModalityStatistics:
        """Pool each modality's foreground voxels over `volumes`; "unknown" volumes are skipped."""
        pooled: dict[str, IntensityStatistics] = {}
        for volume in volumes:
            if volume.modality == "unknown":
                continue
            stats = IntensityStatistics.of(volume.array, foreground_percentile)
            previous = pooled.get(volume.modality)
            pooled[volume.modality] = previous.combine(stats) if previous else stats
        return cls(pooled, foreground_percentile)

    def get(self, modality: str | None) -> IntensityStatistics | None:
        return self.by_modality.get(normalize_modality(modality))

    def merge(self, other: ModalityStatistics) -> ModalityStatistics:
        """Statistics over both sets of volumes (e.g. two sites' statistics) per modality."""
        if other.foreground_percentile != self.foreground_percentile:
            raise ConfigError(
                f"cannot merge modality statistics fitted above different percentiles "
                f"({self.foreground_percentile} vs {other.foreground_percentile})"
            )
        merged = dict(self.by_modality)
        for modality, stats in other.by_modality.items():
            merged[modality] = merged[modality].combine(stats) if modality in merged else stats
        return ModalityStatistics(merged, self.foreground_percentile)

    def to_dict(self) -> dict[str, Any]:
        """Plain str/float/int content, safe for torch's weights_only checkpoint loader and JSON."""
        return {
            "foreground_percentile": self.foreground_percentile,
            "modalities": {
                name: {"mean": s.mean, "std": s.std, "voxels": s.voxels}
                for name, s in self.by_modality.items()
            },
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ModalityStatistics:
        try:
            by_modality = {
                normalize_modality(name): IntensityStatistics(
                    float(s["mean"]), float(s["std"]), int(s["voxels"])
                )
                for name, s in data["modalities"].items()
            }
            return cls(by_modality, float(data["foreground_percentile"]))
        except (KeyError, TypeError, ValueError, AttributeError) as error:
            raise ConfigError(f"modality statistics are malformed: {error!r}") from None


class DomainSpecificNormalization(Transform):
    """Z-score an image (numpy or torch, any shape) with its modality's statistics, as float32.

    An unseen modality falls back to the image's own foreground statistics (per-image z-score), the
    best neutral guess for a scanner the federation has never trained on.
    """

    def __init__(self, stats: ModalityStatistics, eps: float = 1e-6) -> None:
        self.stats = stats
        self.eps = eps

    def statistics_for(self, img: NdarrayOrTensor, modality: str | None) -> IntensityStatistics:
        known = self.stats.get(modality)
        return known if known is not None else IntensityStatistics.of(img, self.stats.foreground_percentile)

    def __call__(self, img: NdarrayOrTensor, modality: str | None = None) -> NdarrayOrTensor:
        stats = self.statistics_for(img, modality)
        data = convert_data_type(img, dtype=torch.float32 if isinstance(img, torch.Tensor) else np.float32)[0]
        return (data - stats.mean) / max(stats.std, self.eps)


class DomainSpecificNormalizationd(MapTransform):
    """Dictionary version: the modality tag is read from `data[modality_key]` ("unknown" if absent)."""

    def __init__(
        self,
        keys: KeysCollection,
        stats: ModalityStatistics,
        modality_key: str = "modality",
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.normalizer = DomainSpecificNormalization(stats)
        self.modality_key = modality_key

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        modality = d.get(self.modality_key, "unknown")
        for key in self.key_iterator(d):
            d[key] = self.normalizer(d[key], modality)
        return d
