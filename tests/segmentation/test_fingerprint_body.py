"""The fingerprint's tissue summary: per modality, the range of the cases' intensity quantiles inside the
body (HU for CT; the body's own 0.5..99.5 percentile window for any other modality), numbers only.

Expected values are numpy's percentiles of the body voxels each test puts into its volumes.
"""

import json

import numpy as np
import pytest

from segmentation.datalist import CaseEntry
from segmentation.fingerprint import fingerprint_cases
from segmentation.io import write_volume
from segmentation.plan import TISSUE_QUANTILES, Fingerprint
from segmentation.volume import Volume

LABELS = {0: "background", 1: "organ"}
SHAPE = (8, 40, 40)  # (z, y, x)
BODY = (slice(2, 6), slice(8, 32), slice(6, 30))  # the box the body fills


def write_case(folder, name: str, background: int, body: np.ndarray, modality: str) -> CaseEntry:
    """A scan of `background` (air) around a box of body voxels, labelled in the box's middle."""
    image = np.full(SHAPE, background, np.int16)
    image[BODY] = body.reshape(image[BODY].shape)
    label = np.zeros(SHAPE, np.uint8)
    label[3:5, 14:26, 12:24] = 1
    spacing = (0.8, 0.8, 3.0)
    write_volume(Volume(image, spacing=spacing), folder / f"{name}.nii.gz")
    write_volume(Volume(label, spacing=spacing, labels=LABELS), folder / f"{name}-label.nii.gz")
    return CaseEntry(folder / f"{name}.nii.gz", folder / f"{name}-label.nii.gz", modality, name)


def body_voxels(rng: np.random.Generator, low: int, high: int) -> np.ndarray:
    count = int(np.prod([s.stop - s.start for s in BODY]))
    return rng.integers(low, high, count).astype(np.int16)


def test_ct_cases_give_the_range_of_their_body_quantiles_in_hounsfield_units(tmp_path):
    rng = np.random.default_rng(0)
    soft = body_voxels(rng, -150, 120)  # an abdomen-like mix: fat to soft tissue
    lungs = np.concatenate([body_voxels(rng, -900, -700)[:600], body_voxels(rng, -100, 80)])[:soft.size]
    cases = [write_case(tmp_path, "soft", -1000, soft, "CT"),  # the tag is normalized
             write_case(tmp_path, "lungs", -1000, lungs, "ct")]
    fingerprint = fingerprint_cases(cases, LABELS)

    first, second = np.percentile(soft, TISSUE_QUANTILES), np.percentile(lungs, TISSUE_QUANTILES)
    assert set(fingerprint.tissue) == {"ct"}
    assert fingerprint.tissue["ct"].low == pytest.approx(np.minimum(first, second))
    assert fingerprint.tissue["ct"].high == pytest.approx(np.maximum(first, second))
    # The air around the body counts nowhere: with it, the 5% quantile would be -1000 HU.
    assert min(fingerprint.tissue["ct"].low) > -1000


def test_mr_cases_are_summarised_on_their_bodys_own_window_whatever_the_scanners_gain(tmp_path):
    rng = np.random.default_rng(1)
    body = body_voxels(rng, 100, 900)
    cases = [write_case(tmp_path, "gain-1", 0, body, "mr-t1"),
             write_case(tmp_path, "gain-3", 0, body * 3, "mr-t1")]  # the same body, another scanner's gain
    tissue = fingerprint_cases(cases, LABELS).tissue["mr-t1"]

    low, high = np.percentile(body.astype(np.float64), (0.5, 99.5))
    expected = np.percentile((body - low) / (high - low), TISSUE_QUANTILES)
    assert tissue.low == pytest.approx(expected) and tissue.high == pytest.approx(expected)


def test_the_tissue_summary_travels_as_numbers_and_modality_codes_only(tmp_path):
    rng = np.random.default_rng(2)
    folder = tmp_path / "St-Elsewhere-patient-0042"
    folder.mkdir()
    cases = [write_case(folder, "patient-0042", -1000, body_voxels(rng, -150, 120), "ct"),
             write_case(folder, "patient-0043", 0, body_voxels(rng, 100, 900), "mr-t2")]
    fingerprint = fingerprint_cases(cases, LABELS)
    data = fingerprint.to_dict()
    assert set(data["tissue"]) == {"ct", "mr-t2"}
    for ranges in data["tissue"].values():
        assert set(ranges) == {"low", "high"}
        assert all(isinstance(value, float) for value in ranges["low"] + ranges["high"])
    assert "patient" not in json.dumps(data) and "Elsewhere" not in json.dumps(data)
    assert Fingerprint.from_dict(json.loads(json.dumps(data))).tissue == fingerprint.tissue
