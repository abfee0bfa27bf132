"""The plan: how every study becomes network input, fixed once from the data's fingerprint (nnU-Net's rules).

A fingerprint holds numbers only (per case: canonical spacing, size and the storage orientation; per
modality: foreground intensity statistics and the range of the tissue quantiles inside the bodies), so
sites of a federation can share it and merge theirs into one plan before round 1 (FednnU-Net's Federated
Fingerprint Extraction). The plan says: canonical orientation (RAS), target spacing, patch size,
normalization and labels, and what the training studies' tissue looked like (so that inference notices a
study of another body region). It travels with the model config and inside every checkpoint, and
training, evaluation and inference all follow it.

Torch-free: the GUI, the CLI's help and the federation's supervisors read plans without loading torch.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from functools import reduce
from pathlib import Path
from typing import Any

import numpy as np

from segmentation.atomic import write_text_atomic
from segmentation.errors import ConfigError
from segmentation.moments import pooled_mean_std

PLAN_FORMAT = "fedseg-plan/1"
FINGERPRINT_FORMAT = "fedseg-fingerprint/1"
CANONICAL_ORIENTATION = "RAS"
# nnU-Net: spacing (or size) differing more than 3x between axes is anisotropic.
ANISOTROPY_THRESHOLD = 3.0
# Estimated training activations allowed for one batch (see estimate_patch_memory_mb).
MEMORY_BUDGET_MB = 2048.0
# Saved activations per feature map entry of one U-Net level during training (forward + backward): a
# MONAI residual unit keeps about six maps of the level's width on the way down and as many (at twice
# the width after concatenation) on the way up. A count for choosing patches, not a measurement.
_MAPS_PER_LEVEL = 12
_PERCENTILES = (0.5, 50.0, 99.5)
# The per-image intensity window (percentiles of the image) that normalization clips and scales to [0, 1].
LOWER_PERCENTILE, UPPER_PERCENTILE = 0.5, 99.5
# Quantiles (percent) of the intensities inside a study's body that describe its tissue mix: a chest's
# air-filled lungs, a head's skull or an abdomen's soft tissue each move them their own way.
TISSUE_QUANTILES = (5.0, 25.0, 50.0, 75.0, 95.0)
HOUNSFIELD = "HU"
WINDOW = "window"


@dataclass(frozen=True)
class CaseFingerprint:
    """One study's geometry: spacing (mm) and size (voxels) along the canonical x (R), y (A), z (S) axes,
    and how it is stored (an orientation code such as "LPS", or "oblique")."""

    spacing: tuple[float, float, float]
    size: tuple[int, int, int]
    orientation: str

    def __post_init__(self) -> None:
        if len(self.spacing) != 3 or not all(math.isfinite(s) and s > 0 for s in self.spacing):
            raise ConfigError(f"a case's spacing must be three positive numbers, got {self.spacing}")
        if len(self.size) != 3 or not all(int(n) >= 1 for n in self.size):
            raise ConfigError(f"a case's size must be three positive integers, got {self.size}")


@dataclass(frozen=True)
class IntensityFingerprint:
    """Foreground (labelled) voxel statistics of one modality: count, mean, std and percentiles."""

    voxels: int
    mean: float
    std: float
    percentiles: dict[str, float]

    def combine(self, other: IntensityFingerprint) -> IntensityFingerprint:
        """Pooled statistics of both sets: exact count, mean and std; percentiles weighted by count
        (an approximation, since sites never share voxel values)."""
        total = self.voxels + other.voxels
        if total == 0:
            return self
        mean, std, _ = pooled_mean_std(self.mean, self.std, self.voxels, other.mean, other.std, other.voxels)
        percentiles = {
            key: (self.percentiles[key] * self.voxels + other.percentiles[key] * other.voxels) / total
            for key in self.percentiles
        }
        return IntensityFingerprint(total, mean, std, percentiles)

    @classmethod
    def of(cls, values: np.ndarray) -> IntensityFingerprint:
        """Statistics of a 1D sample of foreground intensities."""
        values = np.asarray(values, dtype=np.float64).ravel()
        if values.size == 0:
            return cls(0, 0.0, 0.0, {_percentile_key(p): 0.0 for p in _PERCENTILES})
        levels = np.percentile(values, _PERCENTILES)
        return cls(int(values.size), float(values.mean()), float(values.std()),
                   {_percentile_key(p): float(v) for p, v in zip(_PERCENTILES, levels, strict=True)})


def _percentile_key(percentile: float) -> str:
    return f"p{percentile:g}"


def tissue_scale(modality: str) -> str:
    """The units tissue quantiles of a modality are compared in: HOUNSFIELD for CT, whose units are
    absolute; WINDOW for any other (MR's units are a scanner's arbitrary gain, and an untagged study may be
    a CT or an MR): the body's own LOWER..UPPER_PERCENTILE window scaled to 0..1, the plan's per-image
    normalization. Dividing by the body's median would undo the gain only where zero means no signal,
    and blows up on a signed image whose median is near zero."""
    return HOUNSFIELD if modality == "ct" else WINDOW


def tissue_quantiles(body: np.ndarray, scale: str, levels: Sequence[float] = TISSUE_QUANTILES
                     ) -> tuple[float, ...]:
    """The quantiles (percent `levels`) of a study's body intensities (segmentation.body.body_values) in
    `scale`'s units; a body of one intensity is all 0 on the WINDOW scale, as normalization makes it."""
    values = np.asarray(body, dtype=np.float64).ravel()
    if scale == WINDOW:
        low, high = np.percentile(values, (LOWER_PERCENTILE, UPPER_PERCENTILE))
        values = (values - low) / (high - low) if high > low else np.zeros_like(values)
    return tuple(float(v) for v in np.percentile(values, levels))


@dataclass(frozen=True)
class TissueRange:
    """What the training studies of one modality showed inside their bodies: for each of
    TISSUE_QUANTILES, the lowest and the highest value any of them had (in its tissue_scale's units)."""

    low: tuple[float, ...]
    high: tuple[float, ...]

    def __post_init__(self) -> None:
        if not len(self.low) == len(self.high) == len(TISSUE_QUANTILES):
            raise ConfigError(f"a tissue range needs {len(TISSUE_QUANTILES)} low and high quantiles")
        if any(low > high for low, high in zip(self.low, self.high, strict=True)):
            raise ConfigError("a tissue range's low quantiles must not exceed its high ones")

    @classmethod
    def of_case(cls, quantiles: Sequence[float]) -> TissueRange:
        """The range of one study: its own quantiles at both ends."""
        return cls(tuple(quantiles), tuple(quantiles))

    def combine(self, other: TissueRange) -> TissueRange:
        """The range of both sets of studies (exact, unlike pooled percentiles): min of lows, max of highs."""
        return TissueRange(tuple(map(min, self.low, other.low)), tuple(map(max, self.high, other.high)))

    def to_dict(self) -> dict[str, list[float]]:
        return {"low": list(self.low), "high": list(self.high)}

    @classmethod
    def from_dict(cls, data: Any) -> TissueRange:
        """Validated: numbers only; anything else raises ConfigError, KeyError, TypeError or ValueError."""
        return cls(tuple(_finite(v) for v in data["low"]), tuple(_finite(v) for v in data["high"]))


def _combine_tissue(first: Fingerprint, second: Fingerprint) -> dict[str, TissueRange]:
    """Each modality's tissue range over both datasets; none for a modality that one of them has cases of
    but no range for (a site of an earlier version), since a range of some sites' studies only is too
    narrow and would warn about studies like the others'."""
    combined = {}
    for modality in sorted(set(first.tissue) | set(second.tissue)):
        ranges = [fingerprint.tissue.get(modality) for fingerprint in (first, second)
                  if modality in fingerprint.tissue or modality in fingerprint.intensities]
        if None not in ranges:
            combined[modality] = reduce(TissueRange.combine, ranges)  # type: ignore[arg-type]
    return combined


def _tissue_from_dict(data: Any) -> dict[str, TissueRange]:
    return {_code(modality): TissueRange.from_dict(ranges) for modality, ranges in data.items()}


def _tissue_to_dict(tissue: dict[str, TissueRange]) -> dict[str, dict[str, list[float]]]:
    return {modality: ranges.to_dict() for modality, ranges in sorted(tissue.items())}


@dataclass(frozen=True)
class Fingerprint:
    """What a dataset (or a whole federation, merged) looks like, in numbers only."""

    labels: dict[int, str]
    cases: tuple[CaseFingerprint, ...]
    intensities: dict[str, IntensityFingerprint] = field(default_factory=dict)
    tissue: dict[str, TissueRange] = field(default_factory=dict)

    def merge(self, other: Fingerprint) -> Fingerprint:
        """Both datasets as one (FednnU-Net's FFE: every site's case geometries pooled, intensity
        statistics combined and tissue ranges widened per modality); the labels must agree."""
        if self.labels != other.labels:
            raise ConfigError(f"the datasets name different labels: {self.labels} vs {other.labels}")
        intensities = dict(self.intensities)
        for modality, stats in other.intensities.items():
            intensities[modality] = intensities[modality].combine(stats) if modality in intensities else stats
        return Fingerprint(self.labels, self.cases + other.cases, intensities, _combine_tissue(self, other))

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FINGERPRINT_FORMAT,
            "labels": {str(k): v for k, v in sorted(self.labels.items())},
            "cases": [asdict(case) for case in self.cases],
            "intensities": {modality: asdict(stats) for modality, stats in sorted(self.intensities.items())},
            "tissue": _tissue_to_dict(self.tissue),
        }

    @classmethod
    def from_dict(cls, data: Any) -> Fingerprint:
        """Validated: a malformed fingerprint (e.g. from a misbehaving site) is a ConfigError."""
        try:
            if data["format"] != FINGERPRINT_FORMAT:
                raise ConfigError(f"not a fingerprint of this version (format {data['format']!r})")
            cases = tuple(
                CaseFingerprint(_floats(case["spacing"], 3), tuple(int(n) for n in case["size"]),
                                _code(case["orientation"]))
                for case in data["cases"]
            )
            intensities = {
                _code(modality): IntensityFingerprint(
                    int(stats["voxels"]), _finite(stats["mean"]), _finite(stats["std"]),
                    {_code(key): _finite(value) for key, value in stats["percentiles"].items()},
                )
                for modality, stats in data["intensities"].items()
            }
            tissue = _tissue_from_dict(data.get("tissue", {}))  # absent from earlier versions' fingerprints
            return cls(_parse_labels(data["labels"]), cases, intensities, tissue)
        except ConfigError:
            raise
        except (KeyError, TypeError, ValueError, AttributeError) as error:
            raise ConfigError(f"malformed fingerprint ({type(error).__name__}: {error})") from None


@dataclass(frozen=True)
class Plan:
    """How studies become network input, for training, evaluation and inference alike.

    Images are brought to the canonical orientation (RAS) and to `target_spacing` (mm, x y z). A 2D plan
    resamples in-plane only and keeps each study's own slice spacing (as nnU-Net's 2D configuration).
    `patch_size` is in array order: (y, x) for 2D, (z, y, x) for 3D. Intensities are windowed per image
    to their own percentiles (modality-agnostic, what GIN needs) unless `modality_statistics` (domain-
    specific normalization) z-scores each modality with its own statistics. `overridden` names the
    fields an expert set by hand instead of the automatic rule. `tissue` is the training studies' tissue
    range per modality (None in plans made before it was kept), which inference compares a study with.
    """

    labels: dict[int, str]
    spatial_dims: int
    target_spacing: tuple[float, float, float]
    patch_size: tuple[int, ...]
    lower_percentile: float = LOWER_PERCENTILE
    upper_percentile: float = UPPER_PERCENTILE
    modality_statistics: dict[str, Any] | None = field(default=None, hash=False)
    overridden: tuple[str, ...] = ()
    tissue: dict[str, TissueRange] | None = field(default=None, hash=False)

    def __post_init__(self) -> None:
        if self.spatial_dims not in (2, 3):
            raise ConfigError(f"a plan's spatial_dims must be 2 or 3, got {self.spatial_dims}")
        check_target_spacing(self.target_spacing)
        if len(self.patch_size) != self.spatial_dims:
            raise ConfigError(f"a {self.spatial_dims}D plan needs {self.spatial_dims} positive patch sides, "
                              f"got {tuple(self.patch_size)}")
        check_patch_size(self.patch_size)
        if not 0.0 <= self.lower_percentile < self.upper_percentile <= 100.0:
            raise ConfigError(f"percentile window {self.lower_percentile}..{self.upper_percentile} "
                              "is invalid")
        if 0 not in self.labels or len(self.labels) < 2:
            raise ConfigError(f"a plan's labels need background (0) and at least one more, got {self.labels}")

    @property
    def patch_shape_3d(self) -> tuple[int, int, int]:
        """The patch as (z, y, x): a 2D patch is one slice thick."""
        return tuple(self.patch_size) if self.spatial_dims == 3 else (1, *self.patch_size)  # type: ignore[return-value]

    @property
    def normalization(self) -> str:
        return "per-modality z-score" if self.modality_statistics else "per-image percentile window"

    def check_network(self, spatial_dims: int, size_multiple: int) -> None:
        """The plan fits a network: same dimensionality, patch sides multiples of its size multiple."""
        if spatial_dims != self.spatial_dims:
            raise ConfigError(f"the plan is {self.spatial_dims}D but the network is {spatial_dims}D")
        check_patch_size(self.patch_size, size_multiple)

    def describe(self) -> str:
        """One line for people: '2D, 0.7 x 0.7 mm (slices as stored), patch 192 x 192'."""
        x, y, z = self.target_spacing
        spacing = f"{x:.3g} x {y:.3g} mm in-plane, slices as stored" if self.spatial_dims == 2 \
            else f"{x:.3g} x {y:.3g} x {z:.3g} mm"
        return f"{self.spatial_dims}D, {spacing}, patch {' x '.join(map(str, self.patch_size))}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": PLAN_FORMAT,
            "orientation": CANONICAL_ORIENTATION,
            "labels": {str(k): v for k, v in sorted(self.labels.items())},
            "spatial_dims": self.spatial_dims,
            "target_spacing": list(self.target_spacing),
            "patch_size": list(self.patch_size),
            "lower_percentile": self.lower_percentile,
            "upper_percentile": self.upper_percentile,
            "modality_statistics": self.modality_statistics,
            "overridden": list(self.overridden),
            "tissue": _tissue_to_dict(self.tissue) if self.tissue is not None else None,
        }

    @classmethod
    def from_dict(cls, data: Any) -> Plan:
        """Validated: anything malformed is a ConfigError naming what is wrong."""
        if not isinstance(data, dict):
            raise ConfigError(f"a plan must be a JSON object, not {type(data).__name__}")
        if data.get("format") != PLAN_FORMAT:
            raise ConfigError(f"not a plan of this version (format {data.get('format')!r}, expected "
                              f"{PLAN_FORMAT!r})")
        if data.get("orientation", CANONICAL_ORIENTATION) != CANONICAL_ORIENTATION:
            raise ConfigError(f"plans use the {CANONICAL_ORIENTATION} orientation, got "
                              f"{data['orientation']!r}")
        tissue = data.get("tissue")  # absent from plans made before it was kept
        try:
            return cls(
                labels=_parse_labels(data["labels"]),
                spatial_dims=int(data["spatial_dims"]),
                target_spacing=_floats(data["target_spacing"], 3),
                patch_size=tuple(_integer(n) for n in data["patch_size"]),
                lower_percentile=_finite(data.get("lower_percentile", LOWER_PERCENTILE)),
                upper_percentile=_finite(data.get("upper_percentile", UPPER_PERCENTILE)),
                modality_statistics=data.get("modality_statistics"),
                overridden=tuple(str(name) for name in data.get("overridden", ())),
                tissue=_tissue_from_dict(tissue) if tissue is not None else None,
            )
        except KeyError as error:
            raise ConfigError(f"the plan lacks {error}") from None
        except (TypeError, ValueError, AttributeError) as error:
            raise ConfigError(f"malformed plan ({error})") from None


def check_target_spacing(spacing: Sequence[float]) -> None:
    """Three positive, finite millimetre values (x, y, z); a ConfigError naming the axis otherwise."""
    if len(spacing) != 3:
        raise ConfigError(f"target spacing needs 3 values (x, y, z), got {tuple(spacing)}")
    for axis, value in zip("XYZ", spacing, strict=True):
        if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
            raise ConfigError(f"target spacing {axis} must be a positive number of millimetres, "
                              f"not {value:g}")


def check_patch_size(patch_size: Sequence[int], size_multiple: int = 1) -> None:
    """Positive patch sides that a U-Net of this size multiple can halve level by level; the error
    suggests the nearest sides that can."""
    sides = " × ".join(map(str, patch_size))
    if any(int(side) < 1 for side in patch_size):
        raise ConfigError(f"patch sides must be positive, not {sides}")
    if any(side % size_multiple for side in patch_size):
        nearest = " × ".join(str(max(size_multiple, round(side / size_multiple) * size_multiple))
                             for side in patch_size)
        raise ConfigError(f"patch size {sides} must be multiples of {size_multiple} for this U-Net's "
                          f"levels (each halves it); try {nearest}")


def target_spacing(fingerprint: Fingerprint) -> tuple[float, float, float]:
    """nnU-Net's rule: the median spacing per axis; where one axis is much coarser than the others in
    spacing and much shorter in voxels, its 10th percentile instead, so thin-slice studies keep detail."""
    if not fingerprint.cases:
        raise ConfigError("the fingerprint has no cases to plan from")
    spacings = np.array([case.spacing for case in fingerprint.cases], dtype=np.float64)
    sizes = np.array([case.size for case in fingerprint.cases], dtype=np.float64)
    target = np.median(spacings, axis=0)
    median_size = np.median(sizes, axis=0)
    worst = int(np.argmax(target))
    others = [axis for axis in range(3) if axis != worst]
    anisotropic_spacing = target[worst] > ANISOTROPY_THRESHOLD * max(target[others])
    anisotropic_voxels = median_size[worst] * ANISOTROPY_THRESHOLD < min(median_size[others])
    if anisotropic_spacing and anisotropic_voxels:
        finer = float(np.percentile(spacings[:, worst], 10))
        target[worst] = max(finer, max(target[others]) + 1e-5)
    return tuple(round(float(v), 6) for v in target)  # type: ignore[return-value]


def estimate_patch_memory_mb(
    patch_size: Sequence[int], channels: Sequence[int], batch_size: int
) -> float:
    """Training activations of one batch of a MONAI U-Net with these widths, in MB (float32): each level
    holds _MAPS_PER_LEVEL maps of its width at its resolution (halved per level along every axis)."""
    voxels = float(np.prod(patch_size))
    shrink = 2 ** len(patch_size)
    entries = sum(voxels / shrink ** level * width for level, width in enumerate(channels))
    return batch_size * entries * _MAPS_PER_LEVEL * 4 / 2 ** 20


def make_plan(
    fingerprint: Fingerprint,
    spatial_dims: int,
    channels: Sequence[int],
    batch_size: int,
    memory_budget_mb: float = MEMORY_BUDGET_MB,
    spacing: tuple[float, float, float] | None = None,
    patch_size: tuple[int, ...] | None = None,
) -> Plan:
    """The plan for a fingerprint and a network: automatic target spacing and patch size unless given.

    The patch starts at the median image size at the target spacing (in-plane for 2D), rounded up to a
    multiple of the network's size multiple, and shrinks along its longest side until one batch's
    estimated activations fit the memory budget.
    """
    multiple = 2 ** (len(channels) - 1)
    overridden = tuple(name for name, value in (("target_spacing", spacing), ("patch_size", patch_size))
                       if value is not None)
    spacing = tuple(float(v) for v in spacing) if spacing is not None else target_spacing(fingerprint)
    if patch_size is None:
        patch_size = _automatic_patch(fingerprint, spatial_dims, spacing, channels, batch_size,
                                      memory_budget_mb, multiple)
    plan = Plan(labels=dict(fingerprint.labels), spatial_dims=spatial_dims,
                target_spacing=spacing, patch_size=tuple(int(n) for n in patch_size), overridden=overridden,
                tissue=dict(fingerprint.tissue) or None)
    plan.check_network(spatial_dims, multiple)
    return plan


def _automatic_patch(
    fingerprint: Fingerprint, spatial_dims: int, spacing: tuple[float, float, float],
    channels: Sequence[int], batch_size: int, budget_mb: float, multiple: int,
) -> tuple[int, ...]:
    if not fingerprint.cases:
        raise ConfigError("the fingerprint has no cases to plan from")
    extents = np.array([np.multiply(case.spacing, case.size) for case in fingerprint.cases])
    median_xyz = np.median(extents, axis=0) / np.asarray(spacing)
    median = median_xyz[::-1] if spatial_dims == 3 else median_xyz[1::-1]  # array order (z,) y, x
    patch = [max(multiple, int(math.ceil(side / multiple)) * multiple) for side in median]
    while estimate_patch_memory_mb(patch, channels, batch_size) > budget_mb and max(patch) > multiple:
        longest = int(np.argmax(patch))
        patch[longest] -= multiple
    return tuple(patch)


def read_plan(path: str | Path) -> Plan:
    """A plan.json; unreadable or malformed files are a ConfigError naming the file."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise ConfigError(f"{path}: cannot read the plan ({error.strerror or error})") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ConfigError(f"{path}: not a JSON plan ({error})") from None
    try:
        return Plan.from_dict(data)
    except ConfigError as error:
        raise ConfigError(f"{path}: {error}") from None


def write_plan(plan: Plan, path: str | Path, fingerprint: Fingerprint | None = None) -> Path:
    """plan.json (atomically), with the fingerprint it was made from beside the plan when given."""
    data = plan.to_dict()
    if fingerprint is not None:
        data["fingerprint"] = fingerprint.to_dict()
    return write_text_atomic(Path(path), json.dumps(data, indent=2) + "\n")


def _parse_labels(labels: Any) -> dict[int, str]:
    if not isinstance(labels, dict):
        raise ConfigError("labels must map label values to names")
    return {int(key): str(name) for key, name in labels.items()}


def _floats(values: Any, count: int) -> tuple[float, ...]:
    numbers = tuple(_finite(v) for v in values)
    if len(numbers) != count:
        raise ValueError(f"expected {count} numbers, got {len(numbers)}")
    return numbers


def _finite(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{value!r} is not a number")
    number = float(value)
    if not math.isfinite(number):
        raise ValueError(f"{value!r} is not a finite number")
    return number


def _integer(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{value!r} is not an integer")
    return value


def _code(value: Any) -> str:
    """A short plain token (orientation code, modality tag, statistic name): never free text."""
    if not isinstance(value, str) or not 1 <= len(value) <= 16 or not value.replace("-", "").replace(
            ".", "").isalnum():
        raise ValueError(f"{value!r} is not a short code")
    return value
