"""Plumbing shared by the random batch augmentations (GIN, IPA, RandConv, Fourier).

Each family draws its host-side choices (kernel sizes, a seed) from MONAI's `self.R` and every tensor
from a torch generator seeded from it on the input's device, so a batch is augmented in a few batched
kernels on CPU or GPU and the result is reproducible under `set_random_state`.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from monai.config import KeysCollection
from monai.transforms import MapTransform, Randomizable, Transform

from segmentation.errors import ConfigError

_MAX_SEED = 2**31 - 1


def check_kernel_sizes(name: str, sizes: Sequence[int]) -> None:
    """Kernel sizes must be positive and odd so that 'same' padding keeps the image size."""
    if not sizes or any(int(k) != k or k < 1 or k % 2 == 0 for k in sizes):
        raise ConfigError(f"{name} kernel sizes must be positive odd integers, got {tuple(sizes)}")


def check_unit_interval(name: str, bounds: tuple[float, float]) -> None:
    """A (low, high) range for a mixing weight must lie within [0, 1] with low <= high."""
    low, high = bounds
    if not 0.0 <= low <= high <= 1.0:
        raise ConfigError(f"{name} must satisfy 0 <= low <= high <= 1, got {tuple(bounds)}")


def spatial_ndim(img: Any) -> int:
    """2 for a (B, C, H, W) batch, 3 for (B, C, D, H, W); anything else is a programming error."""
    if not isinstance(img, torch.Tensor) or not img.is_floating_point() or img.ndim not in (4, 5):
        shape = tuple(img.shape) if isinstance(img, torch.Tensor) else type(img).__name__
        raise ValueError(f"expected a floating (B, C, H, W) or (B, C, D, H, W) tensor, got {shape}")
    return img.ndim - 2


def _sample_dims(x: torch.Tensor) -> tuple[int, ...]:
    return tuple(range(1, x.ndim))


def uniform_per_sample(
    like: torch.Tensor, low: float, high: float, generator: torch.Generator
) -> torch.Tensor:
    """One U(low, high) draw per sample, shaped (B, 1, ...) to broadcast over that sample."""
    shape = (like.shape[0],) + (1,) * (like.ndim - 1)
    draw = torch.rand(shape, generator=generator, device=like.device, dtype=like.dtype)
    return low + (high - low) * draw


def grouped_random_conv(
    x: torch.Tensor,
    out_channels: int,
    kernel_size: int,
    weight_std: float,
    with_bias: bool,
    generator: torch.Generator,
) -> torch.Tensor:
    """Convolve every sample with its OWN N(0, weight_std^2) kernel in one grouped convolution.

    The batch is folded into channels, (1, B*C, ...), and convolved with B groups, so B different
    random layers cost one kernel launch. Biases, when wanted, are N(0, 1) as in GIN.
    """
    batch, channels, *spatial = x.shape
    ndim = len(spatial)
    options = {"generator": generator, "device": x.device, "dtype": x.dtype}
    weight = torch.randn((batch * out_channels, channels) + (kernel_size,) * ndim, **options) * weight_std
    bias = torch.randn(batch * out_channels, **options) if with_bias else None
    conv = F.conv2d if ndim == 2 else F.conv3d
    out = conv(x.reshape(1, batch * channels, *spatial), weight, bias, padding=kernel_size // 2, groups=batch)
    return out.reshape(batch, out_channels, *spatial)


def match_frobenius_norm(out: torch.Tensor, reference: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """Rescale each sample of `out` to the Frobenius norm of the same sample of `reference`."""
    dims = _sample_dims(out)
    scale = torch.linalg.vector_norm(reference, dim=dims, keepdim=True)
    return out * (scale / (torch.linalg.vector_norm(out, dim=dims, keepdim=True) + eps))


def match_range(out: torch.Tensor, reference: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Map each sample of `out` linearly onto the [min, max] of the same sample of `reference`."""
    dims = _sample_dims(out)
    low, high = out.amin(dim=dims, keepdim=True), out.amax(dim=dims, keepdim=True)
    ref_low, ref_high = reference.amin(dim=dims, keepdim=True), reference.amax(dim=dims, keepdim=True)
    return ref_low + (out - low) / (high - low).clamp_min(eps) * (ref_high - ref_low)


class RandomBatchTransform(Randomizable, Transform):
    """A random augmentation of a whole (B, C, ...) batch, different for every sample.

    `randomize()` draws the host-side choices from `self.R`; `__call__(img, randomize=False)` replays
    them (MONAI's convention, used by the dictionary wrapper to give several keys the same draw).
    Each sample is augmented with probability `prob` (MONAI's Rand* convention) and otherwise passes
    through unchanged, so a batch can keep some of the original appearance.
    Subclasses extend `randomize` and implement `apply`.
    """

    def __init__(self, prob: float = 1.0) -> None:
        if not 0.0 <= prob <= 1.0:
            raise ConfigError(f"augmentation probability must be within [0, 1], got {prob}")
        self.prob = prob
        self._seed: int | None = None

    def randomize(self, data: Any = None) -> None:
        self._seed = int(self.R.randint(0, _MAX_SEED))

    @abstractmethod
    def apply(self, img: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Augment a validated batch, drawing every random tensor from `generator`."""

    def __call__(self, img: torch.Tensor, randomize: bool = True) -> torch.Tensor:
        spatial_ndim(img)
        if randomize:
            self.randomize(img)
        if self._seed is None:
            raise RuntimeError(f"{type(self).__name__}: call randomize() before replaying a draw")
        generator = torch.Generator(device=img.device)
        generator.manual_seed(self._seed)
        with torch.no_grad():
            augmented = self.apply(img, generator)
            if self.prob < 1.0:
                augmented = torch.where(
                    uniform_per_sample(img, 0.0, 1.0, generator) < self.prob, augmented, img
                )
            return augmented


class RandomBatchTransformd(Randomizable, MapTransform):
    """Dictionary wrapper: applies one draw of `transform` to every key; other keys are untouched."""

    def __init__(
        self, keys: KeysCollection, transform: RandomBatchTransform, allow_missing_keys: bool = False
    ):
        MapTransform.__init__(self, keys, allow_missing_keys)
        self.transform = transform

    def set_random_state(self, seed: int | None = None, state: Any = None) -> RandomBatchTransformd:
        super().set_random_state(seed, state)
        self.transform.set_random_state(seed, state)
        return self

    def randomize(self, data: Any = None) -> None:
        self.transform.randomize(data)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        self.randomize()
        for key in self.key_iterator(d):
            d[key] = self.transform(d[key], randomize=False)
        return d
