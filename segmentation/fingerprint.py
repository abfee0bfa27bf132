"""A dataset's fingerprint: each labelled case's geometry (the box around its body, as training sees it),
each modality's foreground intensities and the range of its cases' tissue quantiles inside the body.

Numbers only (no path, name or identifier), so a site may send it to a federation's server. Torch-free.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from segmentation.body import body_region, body_values
from segmentation.datalist import CaseEntry
from segmentation.errors import DatasetError
from segmentation.geometry import canonical_spacing_and_size, check_spacing, orientation_code
from segmentation.io import read_labeled_pair
from segmentation.plan import (
    CaseFingerprint,
    Fingerprint,
    IntensityFingerprint,
    Plan,
    TissueRange,
    make_plan,
    tissue_quantiles,
    tissue_scale,
)
from segmentation.settings import NetworkConfig
from segmentation.volume import Volume, normalize_modality

# Foreground voxels sampled per case for the intensity statistics (nnU-Net samples 10,000).
SAMPLES_PER_CASE = 10_000


def fingerprint_cases(cases: Sequence[CaseEntry], labels: dict[int, str], seed: int = 0) -> Fingerprint:
    """The fingerprint of the labelled cases; each is read once and checked (spacing, label alignment)."""
    labelled = [case for case in cases if case.label is not None]
    if not labelled:
        raise DatasetError("there are no labelled cases to take a fingerprint of")
    rng = np.random.default_rng(seed)
    geometries, samples, tissue = [], {}, {}
    for case in labelled:
        image, label = read_labeled_pair(case.image, case.label, series_uid=case.series_uid)
        check_spacing(image, str(case.image))
        spacing, size = canonical_spacing_and_size(body_box(image, label))
        geometries.append(CaseFingerprint(spacing, size, orientation_code(image.direction)))
        modality = normalize_modality(case.modality)
        foreground = np.asarray(image.array)[np.asarray(label.array) > 0]
        if foreground.size > SAMPLES_PER_CASE:
            foreground = rng.choice(foreground, SAMPLES_PER_CASE, replace=False)
        samples.setdefault(modality, []).append(foreground)
        case_range = TissueRange.of_case(tissue_quantiles(body_values(image.array), tissue_scale(modality)))
        tissue[modality] = tissue[modality].combine(case_range) if modality in tissue else case_range
    intensities = {modality: IntensityFingerprint.of(np.concatenate(values))
                   for modality, values in samples.items()}
    return Fingerprint(dict(labels), tuple(geometries), intensities, tissue)


def body_box(image: Volume, label: Volume) -> Volume:
    """The part of the study that training sees: the box around the body (and its labels); its size is
    what patches are planned from."""
    region = body_region(image.array, also=label.array)
    return image.with_array(np.asarray(image.array)[region])


def plan_for_cases(
    cases: Sequence[CaseEntry], labels: dict[int, str], network: NetworkConfig, batch_size: int,
    spacing: tuple[float, float, float] | None = None, patch_size: tuple[int, ...] | None = None,
) -> tuple[Plan, Fingerprint]:
    """The automatic plan for training `network` on the cases (spacing or patch size set by hand when
    given), with the fingerprint it was made from."""
    fingerprint = fingerprint_cases(cases, labels)
    plan = make_plan(fingerprint, network.spatial_dims, network.channels, batch_size,
                     spacing=spacing, patch_size=patch_size)
    return plan, fingerprint
