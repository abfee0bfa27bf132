"""How each modality renders a tissue map: tissue contrast, texture, blur, bias field and noise.

CT is in Hounsfield units with correlated Gaussian noise. MR T1 and T2 are in arbitrary units with a
smooth multiplicative bias field, Rician noise and a random overall scale. The three orders of
tissue brightness differ (CT: liver > spleen > kidney, all a little above fat; T1: fat brightest,
liver > spleen, fluid dark; T2: fluid brightest, spleen and kidney > fat > liver), while every organ
keeps a visible edge against its neighbours in every modality: shape carries over, intensity does not.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.ndimage import gaussian_filter

from segmentation.errors import ConfigError
from segmentation.synth.anatomy import Tissue
from segmentation.synth.shapes import SmoothField, grid

T = Tissue


@dataclass(frozen=True)
class ModalityModel:
    """Tissue means and texture plus the acquisition artefacts of one modality."""

    means: dict[Tissue, float]
    textures: dict[Tissue, float]  # standard deviation of smooth within-tissue variation
    jitter: float  # per-case standard deviation of each tissue mean (HU for CT, relative for MR)
    noise: tuple[float, float]  # range of the noise standard deviation
    # True: Hounsfield units, additive jitter and Gaussian noise. False (MR): arbitrary units with
    # relative jitter and texture, a bias field, Rician noise and a random overall scale.
    hounsfield: bool = False
    bias: float = 0.0  # standard deviation of the log bias field
    scale: tuple[float, float] = (1.0, 1.0)  # range of the arbitrary overall intensity scale


_SOFT = (T.MUSCLE, T.LIVER, T.KIDNEY, T.MEDULLA, T.SPLEEN, T.PANCREAS, T.BOWEL, T.VESSEL, T.FLUID)

MODALITY_MODELS: dict[str, ModalityModel] = {
    "ct": ModalityModel(
        means={T.AIR: -1000, T.FAT: -100, T.MUSCLE: 50, T.BONE: 700, T.MARROW: 250, T.LUNG: -850,
               T.VESSEL: 42, T.BOWEL: 35, T.FLUID: 8, T.GAS: -950, T.LIVER: 62, T.KIDNEY: 35,
               T.MEDULLA: 28, T.SPLEEN: 48, T.PANCREAS: 42},
        textures={T.FAT: 8, T.BONE: 80, T.MARROW: 40, T.LUNG: 30, T.BOWEL: 10, T.GAS: 20,
                  T.LIVER: 4, T.KIDNEY: 3, T.MEDULLA: 3, T.SPLEEN: 3, T.PANCREAS: 6, T.MUSCLE: 5},
        jitter=4.0, noise=(10.0, 20.0), hounsfield=True,
    ),
    "mr-t1": ModalityModel(
        means={T.AIR: 0.0, T.FAT: 0.90, T.MUSCLE: 0.36, T.BONE: 0.03, T.MARROW: 0.75, T.LUNG: 0.03,
               T.VESSEL: 0.08, T.BOWEL: 0.40, T.FLUID: 0.10, T.GAS: 0.0, T.LIVER: 0.62, T.KIDNEY: 0.50,
               T.MEDULLA: 0.38, T.SPLEEN: 0.48, T.PANCREAS: 0.68},
        textures={tissue: 0.04 for tissue in _SOFT + (T.FAT, T.MARROW)},
        jitter=0.06, noise=(0.015, 0.035), bias=0.15, scale=(200.0, 2000.0),
    ),
    "mr-t2": ModalityModel(
        means={T.AIR: 0.0, T.FAT: 0.12, T.MUSCLE: 0.18, T.BONE: 0.03, T.MARROW: 0.2, T.LUNG: 0.03,
               T.VESSEL: 0.06, T.BOWEL: 0.30, T.FLUID: 1.0, T.GAS: 0.0, T.LIVER: 0.28, T.KIDNEY: 0.50,
               T.MEDULLA: 0.60, T.SPLEEN: 0.45, T.PANCREAS: 0.35},
        textures={tissue: 0.04 for tissue in _SOFT + (T.FAT, T.MARROW)},
        jitter=0.06, noise=(0.015, 0.035), bias=0.15, scale=(200.0, 2000.0),
    ),
}

SYNTH_MODALITIES = tuple(MODALITY_MODELS)


def _unit_noise(rng: np.random.Generator, shape: tuple[int, ...], sigma: tuple[float, ...]) -> np.ndarray:
    """Gaussian noise smoothed by `sigma` voxels and rescaled to unit standard deviation."""
    noise = gaussian_filter(rng.standard_normal(shape).astype(np.float32), sigma, mode="wrap")
    return noise / max(float(noise.std()), 1e-6)


def modality_model(modality: str) -> ModalityModel:
    """The appearance of a phantom modality; ConfigError for one the phantom does not render."""
    if modality not in MODALITY_MODELS:
        choices = ", ".join(SYNTH_MODALITIES)
        raise ConfigError(f"no phantom for modality {modality!r}; choose one of {choices}")
    return MODALITY_MODELS[modality]


def render(tissues: np.ndarray, modality: str, rng: np.random.Generator) -> np.ndarray:
    """A (z, y, x) tissue map -> a float32 image of the modality (CT in HU, MR in arbitrary units)."""
    model = modality_model(modality)
    means = np.array([model.means[tissue] for tissue in Tissue], np.float32)
    textures = np.array([model.textures.get(tissue, 0.0) for tissue in Tissue], np.float32)
    soft = np.array(_SOFT)
    if model.hounsfield:
        means[soft] += rng.normal(0.0, model.jitter, len(soft))
    else:
        means[soft] *= 1.0 + rng.normal(0.0, model.jitter, len(soft))
        textures *= means  # MR texture is relative to the tissue's brightness
    thin = (0.3 if tissues.shape[0] > 1 else 0.0, 1.0, 1.0)  # slices are thick: little blur across them
    image = means[tissues] + textures[tissues] * _unit_noise(rng, tissues.shape, tuple(2 * s for s in thin))
    image = gaussian_filter(image, tuple(0.6 * s for s in thin))  # partial volume at organ edges
    sigma = rng.uniform(*model.noise)
    if model.hounsfield:
        return image + sigma * _unit_noise(rng, tissues.shape, tuple(0.7 * s for s in thin))
    image *= np.exp(model.bias * SmoothField.sample(rng, cycles=0.8, modes=6)(grid(*tissues.shape)))
    real = image + sigma * rng.standard_normal(image.shape).astype(np.float32)
    imaginary = sigma * rng.standard_normal(image.shape).astype(np.float32)
    return (np.hypot(real, imaginary) * rng.uniform(*model.scale)).astype(np.float32)
