"""The body in a scan: the box that training and inference crop to, the voxels intensity windows use."""

import numpy as np

from segmentation.body import MARGIN, body_region


def scan(field: int, rng: np.random.Generator, air: float = -1000.0) -> tuple[np.ndarray, tuple[slice, ...]]:
    """An air-filled field with a body (two tissues, one dark, one bright) at its centre: the body's
    own box, built by hand."""
    array = rng.normal(air, 4.0, (6, field, field)).astype(np.float32)
    top, left = (field - 30) // 2, (field - 40) // 2
    body = (slice(1, 5), slice(top, top + 30), slice(left, left + 40))
    array[body] = rng.normal(60.0, 6.0, (4, 30, 40))  # dark tissue
    array[1:5, top + 10:top + 20, left + 10:left + 30] = 300.0  # a bright organ inside
    return array, body


def grown(box: tuple[slice, ...], shape) -> tuple[slice, ...]:
    return tuple(slice(max(part.start - MARGIN, 0), min(part.stop + MARGIN, side))
                 for part, side in zip(box, shape, strict=True))


def test_the_box_holds_the_body_with_a_margin_however_much_air_surrounds_it():
    rng = np.random.default_rng(0)
    for field in (48, 96):
        array, body = scan(field, rng)
        region = body_region(array)
        assert region == grown(body, array.shape)
        inner = array[region][1:-1, MARGIN:-MARGIN, MARGIN:-MARGIN]
        np.testing.assert_array_equal(inner, array[body])


def test_dark_tissue_belongs_to_the_body():
    """A T2-like scan: most of the body is dark (60) next to a bright organ (300), background near 0."""
    array, body = scan(64, np.random.default_rng(1), air=0.0)
    assert body_region(array) == grown(body, array.shape)


def test_stray_noise_in_the_air_does_not_widen_the_box():
    array, body = scan(64, np.random.default_rng(4), air=0.0)
    array[3, 0, 0] = array[4, 63, 63] = 200.0  # two hot pixels far out in the background
    assert body_region(array) == grown(body, array.shape)


def test_a_scan_without_surrounding_air_is_all_body():
    whole = (slice(0, 4), slice(0, 20), slice(0, 20))
    assert body_region(np.full((4, 20, 20), 7.0, np.float32)) == whole
    assert body_region(np.random.default_rng(2).normal(40.0, 10.0, (4, 20, 20))) == whole  # tissue only


def test_labels_outside_the_body_grow_the_box():
    array, body = scan(64, np.random.default_rng(3))
    labels = np.zeros(array.shape, np.uint8)
    labels[2, 1, 1] = 1  # a labelled voxel in the air (a careless annotation)
    region = body_region(array, also=labels)
    assert region[1].start == 0 and region[2].start == 0
    assert region[1].stop == grown(body, array.shape)[1].stop
