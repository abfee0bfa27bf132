"""Per-label segmentation quality of whole volumes: 3D Dice and the 95th-percentile Hausdorff distance.

Metrics are computed on 3D label maps (a 2D model's slice predictions restacked into the volume), in
the volume's own voxel grid, with distances in millimetres from the voxel spacing. Only foreground
labels are scored; label 0 is background.

Empty structures are scored so that every number stays finite and comparable across cases:
- Dice is 1.0 when prediction and ground truth are both empty (nothing to find, nothing found),
  and 0.0 when exactly one of them is empty.
- HD95 is 0.0 mm when both are empty. When exactly one is empty (a missed or a hallucinated
  structure) the distance is undefined (MONAI returns inf/NaN); we score it as the diagonal of the
  volume's field of view in mm, the largest distance any two voxels can have, so a miss is the
  worst possible score instead of a non-finite value that would poison the means.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from monai.metrics import compute_hausdorff_distance

HD_PERCENTILE = 95.0


def dice_per_label(prediction: np.ndarray, truth: np.ndarray, labels: Sequence[int]) -> dict[int, float]:
    """Dice of each label value between two label maps of the same shape."""
    _check_shapes(prediction, truth)
    scores = {}
    for label in labels:
        predicted, expected = prediction == label, truth == label
        total = int(predicted.sum()) + int(expected.sum())
        overlap = int(np.logical_and(predicted, expected).sum())
        scores[label] = 1.0 if total == 0 else 2.0 * overlap / total
    return scores


def hd95_per_label(
    prediction: np.ndarray, truth: np.ndarray, labels: Sequence[int], spacing: Sequence[float]
) -> dict[int, float]:
    """95th-percentile symmetric Hausdorff distance (mm) of each label; `spacing` is per array axis."""
    _check_shapes(prediction, truth)
    if len(spacing) != prediction.ndim:
        raise ValueError(f"spacing needs {prediction.ndim} values (one per array axis), got {len(spacing)}")
    field_of_view = float(np.sqrt(np.sum((np.asarray(prediction.shape) * np.asarray(spacing)) ** 2)))
    distances = {}
    for label in labels:
        predicted, expected = prediction == label, truth == label
        has_prediction, has_truth = bool(predicted.any()), bool(expected.any())
        if not has_prediction and not has_truth:
            distances[label] = 0.0
        elif has_prediction != has_truth:
            distances[label] = field_of_view
        else:
            with warnings.catch_warnings():  # MONAI warns about its own internal use of a deprecated arg
                warnings.simplefilter("ignore", FutureWarning)
                value = compute_hausdorff_distance(
                    torch.from_numpy(predicted)[None, None], torch.from_numpy(expected)[None, None],
                    include_background=True, percentile=HD_PERCENTILE, spacing=[float(s) for s in spacing],
                )
            distances[label] = float(value.item())
    return distances


def _check_shapes(prediction: np.ndarray, truth: np.ndarray) -> None:
    if prediction.shape != truth.shape:
        raise ValueError(f"prediction shape {prediction.shape} differs from ground truth {truth.shape}")


@dataclass(frozen=True)
class CaseMetrics:
    """Dice and HD95 (mm) of one case, keyed by label name."""

    case_id: str
    dice: dict[str, float]
    hd95: dict[str, float]


def score_case(
    case_id: str, prediction: np.ndarray, truth: np.ndarray, labels: dict[int, str],
    spacing_xyz: Sequence[float],
) -> CaseMetrics:
    """Score a (z, y, x) prediction; `spacing_xyz` is in SimpleITK (x, y, z) order like Volume.spacing."""
    foreground = [value for value in sorted(labels) if value != 0]
    spacing_zyx = tuple(reversed([float(s) for s in spacing_xyz]))
    dice = dice_per_label(prediction, truth, foreground)
    hd95 = hd95_per_label(prediction, truth, foreground, spacing_zyx)
    return CaseMetrics(
        case_id=case_id,
        dice={labels[value]: dice[value] for value in foreground},
        hd95={labels[value]: hd95[value] for value in foreground},
    )


@dataclass(frozen=True)
class EvaluationResult:
    """Per-case scores and their means per label; `dice`/`hd95` average over labels of those means."""

    cases: tuple[CaseMetrics, ...]
    label_dice: dict[str, float]
    label_hd95: dict[str, float]

    @property
    def dice(self) -> float:
        return _mean(self.label_dice.values())

    @property
    def hd95(self) -> float:
        return _mean(self.label_hd95.values())

    @property
    def metrics(self) -> dict[str, float]:
        """Flat name -> number map for events, history files and federated metric records."""
        flat = {"dice": self.dice, "hd95": self.hd95}
        flat.update({f"dice/{name}": value for name, value in self.label_dice.items()})
        flat.update({f"hd95/{name}": value for name, value in self.label_hd95.items()})
        return flat


def summarize(cases: Sequence[CaseMetrics]) -> EvaluationResult:
    """Mean Dice and HD95 of each label over the cases (NaN for a label when there are no cases)."""
    names = list(cases[0].dice) if cases else []
    return EvaluationResult(
        cases=tuple(cases),
        label_dice={name: _mean(case.dice[name] for case in cases) for name in names},
        label_hd95={name: _mean(case.hd95[name] for case in cases) for name in names},
    )


def _mean(values) -> float:
    values = list(values)
    return float(np.mean(values)) if values else float("nan")
