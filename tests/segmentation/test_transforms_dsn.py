"""Domain-specific normalization: per-modality statistics fit, serialization, use and fallback."""

import io
import json

import numpy as np
import pytest
import torch

from segmentation.errors import ConfigError
from segmentation.transforms import (
    DomainSpecificNormalization,
    DomainSpecificNormalizationd,
    IntensityStatistics,
    ModalityStatistics,
)
from segmentation.volume import Volume


def _volume(modality, mean, std, seed, shape=(4, 16, 16), background=None):
    """Foreground ~ N(mean, std); an optional constant background (air) that the fit must ignore."""
    array = np.random.default_rng(seed).normal(mean, std, size=shape)
    if background is not None:
        array[:, :4, :] = background
    return Volume(array.astype(np.float32), modality=modality)


CT_VOLUMES = (("CT", 40.0, 100.0, 0, -1000.0), ("ct", 60.0, 100.0, 1, -1000.0))


@pytest.fixture
def stats():
    volumes = [_volume(m, mean, std, seed, background=air) for m, mean, std, seed, air in CT_VOLUMES]
    volumes += [_volume("MR", 300.0, 50.0, 2, background=0.0), _volume("unknown", 5.0, 1.0, 3)]
    return ModalityStatistics.fit(volumes, foreground_percentile=30.0)


def test_fit_pools_foreground_voxels_per_modality_and_skips_unknown(stats):
    assert set(stats.by_modality) == {"ct", "mr"}
    arrays = [_volume(m, mean, std, seed, background=air).array for m, mean, std, seed, air in CT_VOLUMES]
    foreground = np.concatenate([a[a > np.percentile(a, 30.0)] for a in arrays]).astype(np.float64)
    assert foreground.min() > -1000.0  # the air rows (25% of voxels) are not foreground
    ct = stats.by_modality["ct"]
    assert ct.voxels == foreground.size
    assert ct.mean == pytest.approx(foreground.mean(), rel=1e-6)
    assert ct.std == pytest.approx(foreground.std(), rel=1e-6)
    assert stats.by_modality["mr"].mean > 250.0


def test_pooled_statistics_equal_those_of_all_voxels_together():
    rng = np.random.default_rng(0)
    a, b = rng.normal(0, 1, 1000), rng.normal(5, 3, 500)
    pooled = IntensityStatistics(a.mean(), a.std(), a.size).combine(
        IntensityStatistics(b.mean(), b.std(), b.size)
    )
    both = np.concatenate([a, b])
    assert pooled.mean == pytest.approx(both.mean(), rel=1e-9)
    assert pooled.std == pytest.approx(both.std(), rel=1e-9)
    assert pooled.voxels == both.size


def test_statistics_round_trip_through_a_plain_dict_json_and_torch_weights_only(stats):
    data = stats.to_dict()
    assert ModalityStatistics.from_dict(json.loads(json.dumps(data))) == stats
    buffer = io.BytesIO()
    torch.save({"dsn": data}, buffer)
    buffer.seek(0)
    assert ModalityStatistics.from_dict(torch.load(buffer, weights_only=True)["dsn"]) == stats


@pytest.mark.parametrize("broken", [{}, {"modalities": {"ct": {"mean": 1.0}}, "foreground_percentile": 5}])
def test_malformed_statistics_raise_config_error(broken):
    with pytest.raises(ConfigError, match="modality statistics are malformed"):
        ModalityStatistics.from_dict(broken)


def test_merge_equals_fitting_both_sites_together():
    ct = [_volume("ct", 40.0, 100.0, 0), _volume("ct", 80.0, 90.0, 1)]
    mr = [_volume("mr", 300.0, 50.0, 2)]
    merged = ModalityStatistics.fit(ct[:1] + mr).merge(ModalityStatistics.fit(ct[1:]))
    together = ModalityStatistics.fit(ct + mr)
    for name in ("ct", "mr"):
        assert merged.by_modality[name].mean == pytest.approx(together.by_modality[name].mean, rel=1e-9)
        assert merged.by_modality[name].std == pytest.approx(together.by_modality[name].std, rel=1e-9)
    with pytest.raises(ConfigError, match="different percentiles"):
        merged.merge(ModalityStatistics(foreground_percentile=1.0))


def test_normalization_uses_the_images_modality_statistics(stats):
    normalize = DomainSpecificNormalization(stats)
    image = np.full((2, 3, 3), 250.0, dtype=np.int16)
    ct, mr = stats.by_modality["ct"], stats.by_modality["mr"]
    out_ct, out_mr = normalize(image, "CT"), normalize(image, "mr")
    assert out_ct.dtype == np.float32 and out_ct.shape == image.shape
    np.testing.assert_allclose(out_ct, (250.0 - ct.mean) / ct.std, rtol=1e-5)
    np.testing.assert_allclose(out_mr, (250.0 - mr.mean) / mr.std, rtol=1e-5)


def test_normalization_keeps_torch_tensors_as_tensors(stats):
    image = torch.full((1, 4, 4), 100.0, dtype=torch.float64)
    out = DomainSpecificNormalization(stats)(image, "ct")
    ct = stats.by_modality["ct"]
    assert isinstance(out, torch.Tensor) and out.dtype == torch.float32
    torch.testing.assert_close(out, torch.full((1, 4, 4), (100.0 - ct.mean) / ct.std, dtype=torch.float32))


@pytest.mark.parametrize("modality", ["mr-t2", "unknown", None])
def test_unseen_modality_falls_back_to_the_images_own_foreground_statistics(stats, modality):
    image = _volume("mr-t2", 1000.0, 10.0, 4, background=0.0).array
    out = DomainSpecificNormalization(stats)(image, modality)
    foreground = out[image > np.percentile(image, stats.foreground_percentile)]
    assert abs(float(foreground.mean())) < 1e-3
    assert float(foreground.std()) == pytest.approx(1.0, abs=1e-3)


def test_constant_image_of_unseen_modality_is_finite():
    stats = ModalityStatistics()
    out = DomainSpecificNormalization(stats)(np.full((2, 2, 2), 7.0), "ct")
    assert np.isfinite(out).all() and np.allclose(out, 0.0)


def test_dict_variant_reads_the_modality_and_leaves_the_label_untouched(stats):
    image = np.full((1, 4, 4), 300.0, dtype=np.float32)
    label = np.ones((1, 4, 4), dtype=np.uint8)
    transform = DomainSpecificNormalizationd(keys=["image"], stats=stats)
    out = transform({"image": image, "label": label, "modality": "mr"})
    mr = stats.by_modality["mr"]
    np.testing.assert_allclose(out["image"], (300.0 - mr.mean) / mr.std, rtol=1e-5)
    assert out["label"] is label
