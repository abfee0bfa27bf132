"""Random convolution (RandConv; Xu et al., ICLR 2021).

One random linear convolution per sample changes local texture and contrast while keeping shapes.
Weights are N(0, 1/fan_in) (fan_in = C * k^d), the kernel size is drawn per call, the result is
optionally mixed with the input (the paper's "mix" variant) and mapped back onto each input sample's
intensity range so the network keeps seeing the value range of its preprocessing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from monai.config import KeysCollection

from segmentation.transforms.batch import (
    RandomBatchTransform,
    RandomBatchTransformd,
    check_kernel_sizes,
    grouped_random_conv,
    match_range,
    uniform_per_sample,
)


@dataclass(frozen=True)
class RandConvConfig:
    """Kernel sizes to draw from, and whether to mix with the input by alpha ~ U(0, 1) per sample."""

    kernel_sizes: tuple[int, ...] = (1, 3, 5, 7)
    mix_with_input: bool = True

    def __post_init__(self) -> None:
        check_kernel_sizes("RandConv", self.kernel_sizes)


def randconv_augment(
    x: torch.Tensor, kernel_size: int, mix_with_input: bool, generator: torch.Generator
) -> torch.Tensor:
    """Random per-sample convolution of a (B, C, ...) batch, rescaled to each sample's input range."""
    channels, ndim = x.shape[1], x.ndim - 2
    out = grouped_random_conv(
        x, channels, kernel_size, (channels * kernel_size**ndim) ** -0.5, False, generator
    )
    if mix_with_input:
        alpha = uniform_per_sample(x, 0.0, 1.0, generator)
        out = alpha * x + (1.0 - alpha) * out
    return match_range(out, x)


class RandConv(RandomBatchTransform):
    """RandConv on a (B, C, H, W) or (B, C, D, H, W) float batch; labels are never touched."""

    def __init__(self, config: RandConvConfig | None = None, prob: float = 1.0) -> None:
        super().__init__(prob)
        self.config = config or RandConvConfig()
        self._kernel_size = 1

    def randomize(self, data: Any = None) -> None:
        super().randomize(data)
        self._kernel_size = int(self.R.choice(self.config.kernel_sizes))

    def apply(self, img: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        return randconv_augment(img, self._kernel_size, self.config.mix_with_input, generator)


class RandConvd(RandomBatchTransformd):
    """Dictionary version of RandConv, e.g. RandConvd(keys=["image"])."""

    def __init__(
        self, keys: KeysCollection, config: RandConvConfig | None = None, allow_missing_keys: bool = False
    ):
        super().__init__(keys, RandConv(config), allow_missing_keys)
