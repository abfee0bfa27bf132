"""Plans and fingerprints: nnU-Net's spacing rule, the patch within its budget, FFE merging, validation."""

import json

import numpy as np
import pytest

from segmentation.errors import ConfigError
from segmentation.plan import (
    CaseFingerprint,
    Fingerprint,
    IntensityFingerprint,
    Plan,
    TissueRange,
    estimate_patch_memory_mb,
    make_plan,
    read_plan,
    target_spacing,
    write_plan,
)

LABELS = {0: "background", 1: "liver"}


def fingerprint(*cases, intensities=None, tissue=None) -> Fingerprint:
    return Fingerprint(LABELS, tuple(CaseFingerprint(spacing, size, "LPS") for spacing, size in cases),
                       intensities or {}, tissue or {})


def test_target_spacing_is_the_median_per_axis():
    cases = [((0.7, 0.7, 2.0), (512, 512, 100)), ((0.9, 0.9, 1.0), (512, 512, 300)),
             ((0.8, 0.8, 5.0), (512, 512, 60))]
    assert target_spacing(fingerprint(*cases)) == (0.8, 0.8, 2.0)  # z 2.0 is under 3 x 0.8: isotropic enough


def test_thick_slices_of_few_voxels_take_the_tenth_percentile_instead():
    """nnU-Net: z is > 3x coarser and > 3x shorter than x and y, so z becomes its 10th percentile."""
    cases = [((1.0, 1.0, z), (300, 300, 20)) for z in (4.0, 5.0, 6.0, 7.0, 8.0)]
    spacing = target_spacing(fingerprint(*cases))
    assert spacing[:2] == (1.0, 1.0)
    assert spacing[2] == pytest.approx(np.percentile([4.0, 5.0, 6.0, 7.0, 8.0], 10))  # 4.4, not 6.0


def test_the_patch_is_the_median_field_of_view_then_shrinks_to_the_memory_budget():
    cases = [((0.5, 0.5, 3.0), (400, 300, 40))] * 3  # 200 x 150 mm at 0.5 mm
    generous = make_plan(fingerprint(*cases), 2, (8, 16, 32), batch_size=2, memory_budget_mb=10_000)
    assert generous.patch_size == (300, 400)  # (y, x): already multiples of 4
    tight = make_plan(fingerprint(*cases), 2, (8, 16, 32), batch_size=2, memory_budget_mb=20)
    assert all(side % 4 == 0 for side in tight.patch_size) and max(tight.patch_size) < 400
    assert estimate_patch_memory_mb(tight.patch_size, (8, 16, 32), 2) <= 20
    three_d = make_plan(fingerprint(*cases), 3, (8, 16, 32), batch_size=2, memory_budget_mb=10_000)
    assert three_d.patch_size == (40, 300, 400)


def test_merging_fingerprints_pools_cases_and_intensity_statistics():
    rng = np.random.default_rng(0)
    first, second = rng.normal(100, 10, 5000), rng.normal(300, 40, 15000)
    site_a = fingerprint(((1, 1, 1), (10, 10, 10)), intensities={"ct": IntensityFingerprint.of(first)})
    site_b = fingerprint(((2, 2, 2), (10, 10, 10)), ((3, 3, 3), (10, 10, 10)),
                         intensities={"ct": IntensityFingerprint.of(second)})
    merged = site_a.merge(site_b)
    assert len(merged.cases) == 3
    pooled = np.concatenate([first, second])
    stats = merged.intensities["ct"]
    assert stats.voxels == 20000
    assert stats.mean == pytest.approx(pooled.mean()) and stats.std == pytest.approx(pooled.std())
    with pytest.raises(ConfigError, match="different labels"):
        site_a.merge(Fingerprint({0: "background", 1: "heart"}, (), {}))


def test_merging_fingerprints_widens_each_modalitys_tissue_range_to_hold_both():
    case = ((1, 1, 1), (10, 10, 10))
    stats = IntensityFingerprint.of(np.arange(10.0))
    site_a = fingerprint(case, intensities={"ct": stats}, tissue={
        "ct": TissueRange((-900, -100, 0, 40, 80), (-850, -90, 10, 50, 90))})
    site_b = fingerprint(case, intensities={"ct": stats, "mr-t1": stats}, tissue={
        "ct": TissueRange((-950, -120, -10, 45, 70), (-800, -70, 5, 60, 100)),
        "mr-t1": TissueRange((0.1, 0.2, 0.3, 0.4, 0.5), (0.2, 0.3, 0.4, 0.5, 0.6))})
    merged = site_a.merge(site_b)
    assert merged.tissue == {"ct": TissueRange((-950, -120, -10, 40, 70), (-800, -70, 10, 60, 100)),
                             "mr-t1": site_b.tissue["mr-t1"]}
    assert site_b.merge(site_a).tissue == merged.tissue
    plan = make_plan(merged, 2, (8, 16), batch_size=2)
    assert plan.tissue == merged.tissue
    assert make_plan(fingerprint(case), 2, (8, 16), batch_size=2).tissue is None

    # A site of an earlier version has CT cases but no tissue range: the CT range of the other site alone
    # would be too narrow, so the merge keeps none; its MR T1 range stands.
    earlier = fingerprint(case, intensities={"ct": stats})
    assert earlier.merge(site_b).tissue == site_b.merge(earlier).tissue == {"mr-t1": site_b.tissue["mr-t1"]}


def test_plans_and_fingerprints_without_tissue_ranges_still_load(tmp_path):
    """Plans and fingerprints written before the tissue range was kept have no "tissue" key."""
    old_plan = Plan(LABELS, 2, (0.7, 0.7, 2.5), (192, 160))
    data = old_plan.to_dict()
    del data["tissue"]
    (tmp_path / "plan.json").write_text(json.dumps(data))
    assert read_plan(tmp_path / "plan.json") == old_plan and old_plan.tissue is None
    old_fingerprint = fingerprint(((1, 1, 1), (10, 10, 10)))
    data = old_fingerprint.to_dict()
    del data["tissue"]
    assert Fingerprint.from_dict(data) == old_fingerprint


def test_fingerprints_and_plans_round_trip_and_refuse_anything_malformed(tmp_path):
    tissue = {"mr-t1": TissueRange((0.05, 0.2, 0.4, 0.6, 0.9), (0.1, 0.3, 0.5, 0.7, 0.95))}
    original = fingerprint(((0.7, 0.7, 2.5), (512, 512, 100)),
                           intensities={"mr-t1": IntensityFingerprint.of(np.arange(10.0))}, tissue=tissue)
    assert Fingerprint.from_dict(json.loads(json.dumps(original.to_dict()))) == original
    for broken in ({"format": "x"}, {**original.to_dict(), "cases": [{"spacing": [1, 1], "size": [1, 1, 1],
                                                                       "orientation": "LPS"}]},
                   {**original.to_dict(), "cases": [{"spacing": [1, 1, float("nan")], "size": [1, 1, 1],
                                                     "orientation": "LPS"}]},
                   {**original.to_dict(), "cases": [{"spacing": [1, 1, 1], "size": [1, 1, 1],
                                                     "orientation": "/home/site/patient 7"}]},
                   {**original.to_dict(), "tissue": {"/home/site/patient 7": tissue["mr-t1"].to_dict()}},
                   {**original.to_dict(), "tissue": {"ct": {"low": [0, 0, 0, 0, "x"], "high": [1] * 5}}},
                   {**original.to_dict(), "tissue": {"ct": {"low": [0] * 5, "high": [1] * 4}}}):
        with pytest.raises(ConfigError):
            Fingerprint.from_dict(broken)

    plan = Plan(LABELS, 2, (0.7, 0.7, 2.5), (192, 160), overridden=("patch_size",), tissue=tissue)
    write_plan(plan, tmp_path / "plan.json", fingerprint=original)
    assert read_plan(tmp_path / "plan.json") == plan
    (tmp_path / "bad.json").write_text("{not json")
    for content, message in (("{not json", "not a JSON plan"), ('{"format": "fedseg-plan/9"}', "format"),
                             ('{"format": "fedseg-plan/1", "labels": {"0": "b", "1": "l"}}', "lacks"),
                             (json.dumps({**plan.to_dict(), "patch_size": [192]}), "2 positive patch sides"),
                             (json.dumps({**plan.to_dict(), "target_spacing": [0, 1, 1]}), "positive"),
                             (json.dumps({**plan.to_dict(), "orientation": "LPS"}), "RAS"),
                             (json.dumps({**plan.to_dict(), "tissue": {"ct": {"low": [1] * 5,
                                                                              "high": [0] * 5}}}),
                              "must not exceed"),
                             (json.dumps({**plan.to_dict(), "tissue": ["ct"]}), "malformed plan")):
        (tmp_path / "bad.json").write_text(content)
        with pytest.raises(ConfigError, match=message):
            read_plan(tmp_path / "bad.json")
    with pytest.raises(ConfigError, match="cannot read"):
        read_plan(tmp_path / "missing.json")


def test_a_plan_checks_the_network_it_is_used_with():
    plan = Plan(LABELS, 2, (1, 1, 1), (96, 60))
    plan.check_network(2, 4)
    with pytest.raises(ConfigError, match="multiples of 8"):
        plan.check_network(2, 8)
    with pytest.raises(ConfigError, match="3D"):
        plan.check_network(3, 4)
