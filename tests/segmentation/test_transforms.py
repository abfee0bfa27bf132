"""Random batch augmentations (GIN, GIN+IPA, RandConv, Fourier) and the augmentation registry."""

import pytest
import torch

from segmentation.errors import ConfigError, FedSegError
from segmentation.transforms import (
    AUGMENTATIONS,
    FourierConfig,
    GINConfig,
    IPAConfig,
    RandConv,
    RandConvConfig,
    RandConvd,
    RandFourierMix,
    RandFourierMixd,
    RandGIN,
    RandGINd,
    RandGINIPA,
    RandGINIPAd,
    build_batch_augmentation,
)
from segmentation.transforms.gin import gin_augment
from segmentation.transforms.ipa import random_blend_field

ARRAY_TRANSFORMS = {"gin": RandGIN, "gin-ipa": RandGINIPA, "randconv": RandConv, "fourier": RandFourierMix}
DICT_TRANSFORMS = {"gin": RandGINd, "gin-ipa": RandGINIPAd, "randconv": RandConvd, "fourier": RandFourierMixd}
SHAPES = {"2d": (3, 2, 16, 16), "3d": (2, 1, 8, 8, 8)}


def _batch(shape, seed=0, dtype=torch.float32):
    """Smooth-ish positive images (a blob plus noise), like normalized slices."""
    generator = torch.Generator().manual_seed(seed)
    grids = torch.meshgrid(*[torch.linspace(-1, 1, n) for n in shape[2:]], indexing="ij")
    blob = torch.exp(-3 * sum(g**2 for g in grids))
    noise = torch.rand(shape, generator=generator)
    return (blob + 0.3 * noise).to(dtype)


def _per_sample_norm(x):
    return torch.linalg.vector_norm(x.flatten(1).double(), dim=1)


@pytest.mark.parametrize("name", sorted(ARRAY_TRANSFORMS))
@pytest.mark.parametrize("dims", sorted(SHAPES))
def test_output_keeps_shape_dtype_device_and_is_finite(name, dims):
    for dtype in (torch.float32, torch.float64):
        x = _batch(SHAPES[dims], dtype=dtype)
        out = ARRAY_TRANSFORMS[name]().set_random_state(1)(x)
        assert out.shape == x.shape and out.dtype == dtype and out.device == x.device
        assert torch.isfinite(out).all()
        assert not torch.allclose(out, x, atol=1e-4)  # it really changed the batch


@pytest.mark.parametrize("name", sorted(ARRAY_TRANSFORMS))
@pytest.mark.parametrize("dims", sorted(SHAPES))
def test_same_seed_same_output_different_seed_different_output(name, dims):
    x = _batch(SHAPES[dims])
    first = ARRAY_TRANSFORMS[name]().set_random_state(7)(x)
    again = ARRAY_TRANSFORMS[name]().set_random_state(7)(x)
    other = ARRAY_TRANSFORMS[name]().set_random_state(8)(x)
    torch.testing.assert_close(first, again)
    assert not torch.allclose(first, other, atol=1e-4)


@pytest.mark.parametrize(
    "make",
    # a 1x1 RandConv kernel on one channel is only a contrast scaling, undone by the range matching
    [RandGIN, RandGINIPA, lambda: RandConv(RandConvConfig(kernel_sizes=(3,)))],
    ids=["gin", "gin-ipa", "randconv"],
)
@pytest.mark.parametrize("dims", sorted(SHAPES))
def test_identical_samples_in_one_batch_get_different_augmentations(make, dims):
    one = _batch((1,) + SHAPES[dims][1:])
    out = make().set_random_state(3)(one.repeat(2, *([1] * (one.ndim - 1))))
    assert not torch.allclose(out[0], out[1], atol=1e-4)


def test_fourier_noise_partner_differs_per_sample():
    one = _batch((1, 1, 16, 16))
    transform = RandFourierMix(FourierConfig(partner="noise", window=0.5)).set_random_state(3)
    out = transform(one.repeat(2, 1, 1, 1))
    assert not torch.allclose(out[0], out[1], atol=1e-4)


def test_consecutive_calls_draw_new_augmentations():
    x = _batch(SHAPES["2d"])
    transform = RandGIN().set_random_state(0)
    assert not torch.allclose(transform(x), transform(x), atol=1e-4)


@pytest.mark.parametrize("dims", sorted(SHAPES))
def test_gin_preserves_each_samples_frobenius_norm(dims):
    x = _batch(SHAPES[dims])
    x[0] *= 5.0  # samples of very different norms must each keep their own
    out = RandGIN().set_random_state(0)(x)
    torch.testing.assert_close(_per_sample_norm(out), _per_sample_norm(x), rtol=1e-4, atol=1e-4)


def test_gin_with_alpha_zero_returns_the_input():
    x = _batch(SHAPES["2d"])
    out = RandGIN(GINConfig(alpha_range=(0.0, 0.0))).set_random_state(0)(x)
    torch.testing.assert_close(out, x, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("shape", [(4, 1, 32, 32), (2, 1, 12, 12, 12)])
def test_ipa_field_is_within_unit_interval_per_sample_and_smooth(shape):
    like = torch.zeros(shape)
    field = random_blend_field(like, 4, torch.Generator().manual_seed(0))
    assert field.shape == (shape[0], 1) + shape[2:]
    flat = field.flatten(1)
    assert flat.min() >= 0.0 and flat.max() <= 1.0
    torch.testing.assert_close(flat.amin(dim=1), torch.zeros(shape[0]))
    torch.testing.assert_close(flat.amax(dim=1), torch.ones(shape[0]))
    assert not torch.allclose(field[0], field[1])
    # smooth: neighbouring voxels differ by a small fraction of the [0, 1] range, unlike white noise
    for axis in range(2, field.ndim):
        assert field.diff(dim=axis).abs().max() < 0.35
        assert field.diff(dim=axis).abs().mean() < 0.1


def test_ipa_blends_two_gin_views_voxel_by_voxel():
    x = _batch(SHAPES["2d"])
    transform = RandGINIPA().set_random_state(0)
    out = transform(x)
    # replay the draw: the two GIN views come first from the same generator, then the field
    generator = torch.Generator().manual_seed(transform._seed)
    first, second = (gin_augment(x, transform.config.gin, k, generator) for k in transform._kernel_sizes)
    assert (out >= torch.minimum(first, second) - 1e-5).all()
    assert (out <= torch.maximum(first, second) + 1e-5).all()
    assert not torch.allclose(out, first, atol=1e-3) and not torch.allclose(out, second, atol=1e-3)


def test_randconv_maps_each_sample_onto_its_input_range():
    x = _batch(SHAPES["2d"])
    x[1] = x[1] * 100.0 - 20.0
    out = RandConv(RandConvConfig(kernel_sizes=(3,))).set_random_state(0)(x)
    torch.testing.assert_close(out.flatten(1).amin(dim=1), x.flatten(1).amin(dim=1), rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(out.flatten(1).amax(dim=1), x.flatten(1).amax(dim=1), rtol=1e-4, atol=1e-4)


def test_randconv_kernel_size_one_without_mixing_is_an_intensity_remap():
    x = _batch((2, 1, 8, 8))
    config = RandConvConfig(kernel_sizes=(1,), mix_with_input=False)
    out = RandConv(config).set_random_state(0)(x)
    # a 1x1 kernel is an affine map per sample: the output is perfectly (anti-)correlated with the input
    for sample in range(2):
        correlation = torch.corrcoef(torch.stack([x[sample].flatten(), out[sample].flatten()]))[0, 1]
        assert abs(float(correlation)) == pytest.approx(1.0, abs=1e-4)


def test_fourier_sample_mixed_with_itself_is_unchanged():
    x = _batch((1, 1, 16, 16))  # a batch of one has only itself as partner
    out = RandFourierMix(FourierConfig(window=1.0)).set_random_state(0)(x)
    torch.testing.assert_close(out, x, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("partner", ["batch", "noise"])
@pytest.mark.parametrize("dims", sorted(SHAPES))
def test_fourier_keeps_phase_and_only_changes_low_frequency_amplitude(partner, dims):
    x = _batch(SHAPES[dims]).double()
    x[1] = x[1].flip(-1) * 3.0  # a partner with a different spectrum
    window = 0.5
    out = RandFourierMix(FourierConfig(window=window, partner=partner)).set_random_state(2)(x)
    spatial = tuple(range(2, x.ndim))
    before, after = torch.fft.rfftn(x, dim=spatial), torch.fft.rfftn(out, dim=spatial)
    significant = before.abs() > 1e-6 * before.abs().max()
    phase_gap = torch.angle(after * before.conj())[significant]
    assert phase_gap.abs().max() < 1e-6
    freqs = [torch.fft.fftfreq(n).abs() for n in x.shape[2:-1]] + [torch.fft.rfftfreq(x.shape[-1])]
    low = torch.stack(torch.meshgrid(*[f <= window / 2 for f in freqs], indexing="ij")).all(dim=0)
    torch.testing.assert_close(after.abs()[..., ~low], before.abs()[..., ~low])
    assert not torch.allclose(after.abs()[..., low], before.abs()[..., low])


@pytest.mark.parametrize("name", sorted(DICT_TRANSFORMS))
def test_dict_variants_augment_the_image_and_leave_the_label_untouched(name):
    image = _batch(SHAPES["2d"])
    label = (image > 0.8).long()
    data = {"image": image, "label": label, "modality": "ct"}
    out = DICT_TRANSFORMS[name](keys=["image"]).set_random_state(5)(data)
    assert out["label"] is label and out["modality"] == "ct"
    assert data["image"] is image  # the input mapping is not modified
    expected = ARRAY_TRANSFORMS[name]().set_random_state(5)(image)
    torch.testing.assert_close(out["image"], expected)


def test_dict_variant_gives_every_key_the_same_draw():
    image = _batch(SHAPES["2d"])
    out = RandGINd(keys=["image", "copy"]).set_random_state(0)({"image": image, "copy": image.clone()})
    torch.testing.assert_close(out["image"], out["copy"])


def test_replaying_without_a_draw_is_refused():
    with pytest.raises(RuntimeError, match="randomize"):
        RandGIN()(_batch(SHAPES["2d"]), randomize=False)


@pytest.mark.parametrize("bad", [torch.zeros(4, 16, 16), torch.zeros(1, 1, 4, 4, dtype=torch.long)])
def test_wrong_input_is_a_clear_error(bad):
    with pytest.raises(ValueError, match="floating"):
        RandGIN()(bad)


@pytest.mark.parametrize(
    "make",
    [
        lambda: GINConfig(layers=1),
        lambda: GINConfig(kernel_sizes=(2,)),
        lambda: GINConfig(alpha_range=(0.5, 1.5)),
        lambda: IPAConfig(control_points=1),
        lambda: RandConvConfig(kernel_sizes=()),
        lambda: FourierConfig(window=0.0),
        lambda: FourierConfig(max_ratio=2.0),
        lambda: FourierConfig(partner="other"),
    ],
)
def test_invalid_settings_raise_config_error(make):
    with pytest.raises(ConfigError):
        make()


def test_registry_builds_the_batch_op_for_every_random_family():
    assert AUGMENTATIONS == ("none", "gin", "gin-ipa", "randconv", "fourier", "dsn")
    assert build_batch_augmentation("none") is None
    assert build_batch_augmentation("dsn") is None
    x = _batch(SHAPES["2d"])
    for name, cls in ARRAY_TRANSFORMS.items():
        op = build_batch_augmentation(name, seed=11)
        assert isinstance(op, cls)
        torch.testing.assert_close(op(x), cls().set_random_state(11)(x))


def test_registry_rejects_unknown_names_naming_the_choices():
    with pytest.raises(ValueError, match="gin-ipa, randconv") as caught:
        build_batch_augmentation("mixup")
    assert isinstance(caught.value, FedSegError) and "\n" not in str(caught.value)


# RandConv's 1x1 kernel is an identity on one channel once range-matched, so it is left out here.
PROBABILITY_CASES = {
    "gin": lambda prob: RandGIN(prob=prob),
    "gin-ipa": lambda prob: RandGINIPA(prob=prob),
    "randconv": lambda prob: RandConv(RandConvConfig(kernel_sizes=(3, 5)), prob=prob),
    "fourier": lambda prob: RandFourierMix(prob=prob),
}


@pytest.mark.parametrize("name", PROBABILITY_CASES)
def test_probability_decides_per_sample_which_samples_are_augmented(name):
    batch = torch.rand(64, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    never = PROBABILITY_CASES[name](0.0).set_random_state(3)
    torch.testing.assert_close(never(batch), batch)
    half = PROBABILITY_CASES[name](0.5).set_random_state(3)(batch)
    changed = (half - batch).abs().flatten(1).amax(dim=1) > 1e-6
    assert 16 < int(changed.sum()) < 48  # about half of 64, each sample entirely one or the other
    again = PROBABILITY_CASES[name](0.5).set_random_state(3)(batch)
    torch.testing.assert_close(again, half)


def test_probability_outside_the_unit_interval_is_refused():
    with pytest.raises(ConfigError, match="probability"):
        build_batch_augmentation("gin", prob=1.5)
