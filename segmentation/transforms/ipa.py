"""Interventional pseudo-correlation augmentation (IPA; Ouyang et al., IEEE TMI 2022).

Two GIN views of the same batch are blended through a smooth random field, so different regions of
one image receive different intensity mappings: this breaks spurious correlations between an
organ's appearance and its surroundings. As in the reference implementation each GIN view already
carries the input's Frobenius norm and the blend itself is not renormalized.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from monai.config import KeysCollection

from segmentation.errors import ConfigError
from segmentation.transforms.batch import RandomBatchTransform, RandomBatchTransformd
from segmentation.transforms.gin import GINConfig, draw_kernel_sizes, gin_augment


@dataclass(frozen=True)
class IPAConfig:
    """The GIN views to blend and the coarseness of the blending field (control points per axis)."""

    gin: GINConfig = field(default_factory=GINConfig)
    control_points: int = 4

    def __post_init__(self) -> None:
        if self.control_points < 2:
            raise ConfigError(f"IPA needs at least 2 control points per axis, got {self.control_points}")


def random_blend_field(like: torch.Tensor, control_points: int, generator: torch.Generator) -> torch.Tensor:
    """A smooth (B, 1, ...) field in [0, 1], different per sample, on `like`'s device.

    N(0, 1) values on a coarse control grid are upsampled to the image size (bicubic in 2D, trilinear
    in 3D; torch has no tricubic) and min-max rescaled per sample, like the reference's B-spline
    interpolated control points followed by intensity rescaling.
    """
    ndim = like.ndim - 2
    work_dtype = torch.promote_types(like.dtype, torch.float32)
    shape = (like.shape[0], 1) + (control_points,) * ndim
    grid = torch.randn(shape, generator=generator, device=like.device, dtype=work_dtype)
    mode = "bicubic" if ndim == 2 else "trilinear"
    smooth = F.interpolate(grid, size=tuple(like.shape[2:]), mode=mode, align_corners=True)
    dims = tuple(range(1, smooth.ndim))
    low, high = smooth.amin(dim=dims, keepdim=True), smooth.amax(dim=dims, keepdim=True)
    return ((smooth - low) / (high - low).clamp_min(1e-8)).to(like.dtype)


class RandGINIPA(RandomBatchTransform):
    """GIN + IPA: field * GIN_1(x) + (1 - field) * GIN_2(x), a new field and nets per sample."""

    def __init__(self, config: IPAConfig | None = None, prob: float = 1.0) -> None:
        super().__init__(prob)
        self.config = config or IPAConfig()
        self._kernel_sizes: tuple[tuple[int, ...], tuple[int, ...]] = ((), ())

    def randomize(self, data: Any = None) -> None:
        super().randomize(data)
        self._kernel_sizes = (
            draw_kernel_sizes(self.config.gin, self.R),
            draw_kernel_sizes(self.config.gin, self.R),
        )

    def apply(self, img: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        first, second = (gin_augment(img, self.config.gin, sizes, generator) for sizes in self._kernel_sizes)
        blend = random_blend_field(img, self.config.control_points, generator)
        return blend * first + (1.0 - blend) * second


class RandGINIPAd(RandomBatchTransformd):
    """Dictionary version of RandGINIPA, e.g. RandGINIPAd(keys=["image"])."""

    def __init__(
        self, keys: KeysCollection, config: IPAConfig | None = None, allow_missing_keys: bool = False
    ):
        super().__init__(keys, RandGINIPA(config), allow_missing_keys)
