"""Fourier low-frequency amplitude mixing (FDA, Yang & Soatto CVPR 2020; FACT, Xu et al. CVPR 2021).

The amplitude spectrum's low frequencies carry global "style" (contrast, intensity profile) and the
phase carries structure. Each sample's low-frequency amplitude is mixed with another sample's (a
random derangement of the batch) or with a random perturbation of its own, by a ratio
lambda ~ U(0, max_ratio) per sample; the phase is kept, so anatomy and labels stay aligned.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from monai.config import KeysCollection

from segmentation.errors import ConfigError
from segmentation.transforms.batch import RandomBatchTransform, RandomBatchTransformd, uniform_per_sample

Partner = Literal["batch", "noise"]


@dataclass(frozen=True)
class FourierConfig:
    """Window, mixing ratio and partner of the amplitude mix.

    window: side of the centred low-frequency window as a fraction of each axis' spectrum (FDA's beta;
    1.0 mixes the whole spectrum as FACT does). partner "batch" takes another sample's amplitude (a
    batch of one is left unchanged); "noise" multiplies the sample's own amplitude by
    exp(noise_std * N(0, 1)), symmetric in frequency so the image stays real, which also works
    for a batch of one.
    """

    window: float = 0.2
    max_ratio: float = 1.0
    partner: Partner = "batch"
    noise_std: float = 0.5

    def __post_init__(self) -> None:
        if not 0.0 < self.window <= 1.0:
            raise ConfigError(f"Fourier window must be in (0, 1], got {self.window}")
        if not 0.0 <= self.max_ratio <= 1.0:
            raise ConfigError(f"Fourier max_ratio must be in [0, 1], got {self.max_ratio}")
        if self.partner not in ("batch", "noise"):
            raise ConfigError(f"Fourier partner must be 'batch' or 'noise', got {self.partner!r}")
        if self.noise_std < 0.0:
            raise ConfigError(f"Fourier noise_std must be >= 0, got {self.noise_std}")


def low_frequency_mask(spatial: tuple[int, ...], window: float, device: torch.device) -> torch.Tensor:
    """Boolean mask over the rfftn half-spectrum: |frequency| <= window / 2 on every axis."""
    freqs = [torch.fft.fftfreq(n, device=device) for n in spatial[:-1]]
    freqs.append(torch.fft.rfftfreq(spatial[-1], device=device))
    inside = [f.abs() <= window / 2 for f in freqs]
    return torch.stack(torch.meshgrid(*inside, indexing="ij")).all(dim=0)


def _symmetric_noise(like: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Gaussian noise over the full spectrum with noise(f) == noise(-f), cut to the rfftn half."""
    dims = tuple(range(2, like.ndim))
    noise = torch.randn(like.shape, generator=generator, device=like.device, dtype=like.dtype)
    mirrored = noise.flip(dims).roll(shifts=(1,) * len(dims), dims=dims)
    return (0.5 * (noise + mirrored))[..., : like.shape[-1] // 2 + 1]


def fourier_amplitude_mix(x: torch.Tensor, config: FourierConfig, generator: torch.Generator) -> torch.Tensor:
    """Mix the low-frequency amplitude of each sample of a (B, C, ...) batch; keep every phase."""
    work = x.to(torch.promote_types(x.dtype, torch.float32))
    dims = tuple(range(2, x.ndim))
    spectrum = torch.fft.rfftn(work, dim=dims)
    amplitude, phase = spectrum.abs(), spectrum.angle()
    if config.partner == "batch":
        batch = x.shape[0]
        shift = torch.randint(1, max(batch, 2), (1,), generator=generator, device=x.device)
        other = amplitude[(torch.arange(batch, device=x.device) + shift) % batch]
    else:
        other = amplitude * torch.exp(config.noise_std * _symmetric_noise(work, generator))
    ratio = uniform_per_sample(work, 0.0, config.max_ratio, generator)
    mask = low_frequency_mask(tuple(x.shape[2:]), config.window, x.device)
    mixed = torch.where(mask, (1.0 - ratio) * amplitude + ratio * other, amplitude)
    out = torch.fft.irfftn(torch.polar(mixed, phase), s=tuple(x.shape[2:]), dim=dims)
    return out.to(x.dtype)


class RandFourierMix(RandomBatchTransform):
    """Fourier amplitude mixing on a (B, C, H, W) or (B, C, D, H, W) float batch; labels untouched."""

    def __init__(self, config: FourierConfig | None = None, prob: float = 1.0) -> None:
        super().__init__(prob)
        self.config = config or FourierConfig()

    def apply(self, img: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        return fourier_amplitude_mix(img, self.config, generator)


class RandFourierMixd(RandomBatchTransformd):
    """Dictionary version of RandFourierMix, e.g. RandFourierMixd(keys=["image"])."""

    def __init__(
        self, keys: KeysCollection, config: FourierConfig | None = None, allow_missing_keys: bool = False
    ):
        super().__init__(keys, RandFourierMix(config), allow_missing_keys)
