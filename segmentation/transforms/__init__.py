"""Cross-modality augmentation: the families the method paper compares, one module each.

Random batch augmentations act on a (B, C, ...) float batch on its own device, a different draw per
sample: GIN (gin), GIN + IPA (ipa), random convolution (randconv), Fourier amplitude mixing (fourier).
Domain-specific normalization (dsn) is a deterministic normalization used at training AND inference.
`build_batch_augmentation` turns a name from AUGMENTATIONS into the batch op the trainer calls.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from segmentation.errors import ConfigError
from segmentation.settings import AUGMENTATION_NAMES
from segmentation.transforms.batch import RandomBatchTransform
from segmentation.transforms.dsn import (
    DomainSpecificNormalization,
    DomainSpecificNormalizationd,
    IntensityStatistics,
    ModalityStatistics,
)
from segmentation.transforms.fourier import FourierConfig, RandFourierMix, RandFourierMixd
from segmentation.transforms.gin import GINConfig, RandGIN, RandGINd
from segmentation.transforms.ipa import IPAConfig, RandGINIPA, RandGINIPAd
from segmentation.transforms.randconv import RandConv, RandConvConfig, RandConvd

AUGMENTATIONS = AUGMENTATION_NAMES

_BATCH_AUGMENTATIONS: dict[str, type[RandomBatchTransform]] = {
    "gin": RandGIN,
    "gin-ipa": RandGINIPA,
    "randconv": RandConv,
    "fourier": RandFourierMix,
}


class UnknownAugmentationError(ConfigError, ValueError):
    """An augmentation name outside AUGMENTATIONS (a ValueError too, for callers that expect one)."""


def build_batch_augmentation(
    name: str, seed: int | None = None, prob: float = 1.0
) -> Callable[[torch.Tensor], torch.Tensor] | None:
    """The random batch op for `name` with default settings, seeded if `seed` is given, applied to
    each sample with probability `prob`.

    None for "none" and for "dsn", which acts through normalization (see DomainSpecificNormalization).
    """
    if name not in AUGMENTATIONS:
        raise UnknownAugmentationError(
            f"unknown augmentation {name!r}; choose one of: {', '.join(AUGMENTATIONS)}"
        )
    factory = _BATCH_AUGMENTATIONS.get(name)
    if factory is None:
        return None
    transform = factory(prob=prob)
    if seed is not None:
        transform.set_random_state(seed)
    return transform


__all__ = [
    "AUGMENTATIONS",
    "DomainSpecificNormalization",
    "DomainSpecificNormalizationd",
    "FourierConfig",
    "GINConfig",
    "IPAConfig",
    "IntensityStatistics",
    "ModalityStatistics",
    "RandConv",
    "RandConvConfig",
    "RandConvd",
    "RandFourierMix",
    "RandFourierMixd",
    "RandGIN",
    "RandGINIPA",
    "RandGINIPAd",
    "RandGINd",
    "UnknownAugmentationError",
    "build_batch_augmentation",
]
