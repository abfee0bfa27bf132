"""Global Intensity Non-linear augmentation (GIN; Ouyang et al., IEEE TMI 2022).

A freshly drawn shallow random convolutional network re-maps intensities non-linearly while keeping
anatomy in place, so a CT slice may come out with MR-like contrast. Every sample of a batch gets its
own network (one grouped convolution per layer), is mixed with the input by a random weight and is
rescaled to the input's Frobenius norm, as in the authors' reference implementation.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from monai.config import KeysCollection

from segmentation.errors import ConfigError
from segmentation.transforms.batch import (
    RandomBatchTransform,
    RandomBatchTransformd,
    check_kernel_sizes,
    check_unit_interval,
    grouped_random_conv,
    match_frobenius_norm,
    uniform_per_sample,
)


@dataclass(frozen=True)
class GINConfig:
    """The random network's shape and the range of the per-sample mixing weight alpha."""

    layers: int = 4
    hidden_channels: int = 2
    kernel_sizes: tuple[int, ...] = (1, 3)
    alpha_range: tuple[float, float] = (0.0, 1.0)

    def __post_init__(self) -> None:
        if self.layers < 2:
            raise ConfigError(f"GIN needs at least 2 layers, got {self.layers}")
        if self.hidden_channels < 1:
            raise ConfigError(f"GIN needs at least 1 hidden channel, got {self.hidden_channels}")
        check_kernel_sizes("GIN", self.kernel_sizes)
        check_unit_interval("GIN alpha_range", self.alpha_range)


def draw_kernel_sizes(config: GINConfig, rng: np.random.RandomState) -> tuple[int, ...]:
    """One kernel size per layer (shared by the batch; the weights are what differ per sample)."""
    return tuple(int(rng.choice(config.kernel_sizes)) for _ in range(config.layers))


def gin_augment(
    x: torch.Tensor, config: GINConfig, kernel_sizes: tuple[int, ...], generator: torch.Generator
) -> torch.Tensor:
    """One GIN view of a (B, C, ...) batch: random net, alpha-mix with x, per-sample norm of x."""
    widths = [config.hidden_channels] * (config.layers - 1) + [x.shape[1]]
    out = x
    for index, (width, kernel_size) in enumerate(zip(widths, kernel_sizes, strict=True)):
        out = grouped_random_conv(out, width, kernel_size, 1.0, True, generator)
        if index < config.layers - 1:
            out = F.leaky_relu(out)
    alpha = uniform_per_sample(x, *config.alpha_range, generator)
    return match_frobenius_norm(alpha * out + (1.0 - alpha) * x, x)


class RandGIN(RandomBatchTransform):
    """GIN on a (B, C, H, W) or (B, C, D, H, W) float batch; labels are never touched."""

    def __init__(self, config: GINConfig | None = None, prob: float = 1.0) -> None:
        super().__init__(prob)
        self.config = config or GINConfig()
        self._kernel_sizes: tuple[int, ...] = ()

    def randomize(self, data: Any = None) -> None:
        super().randomize(data)
        self._kernel_sizes = draw_kernel_sizes(self.config, self.R)

    def apply(self, img: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        return gin_augment(img, self.config, self._kernel_sizes, generator)


class RandGINd(RandomBatchTransformd):
    """Dictionary version of RandGIN, e.g. RandGINd(keys=["image"])."""

    def __init__(
        self, keys: KeysCollection, config: GINConfig | None = None, allow_missing_keys: bool = False
    ):
        super().__init__(keys, RandGIN(config), allow_missing_keys)
