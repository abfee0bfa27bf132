"""Slice ordering and spacing checks on hand-made positions (oblique, tilted, gapped stacks)."""

import numpy as np
import pytest

from segmentation.errors import SliceGeometryError
from segmentation.io.dicom_geometry import slice_geometry

AXIAL = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)


def stack(heights, orientation=AXIAL, sideways=(0.0, 0.0, 0.0)):
    """Positions of slices at `heights` along the normal of `orientation`, shifted per slice."""
    row, column = np.array(orientation[:3]), np.array(orientation[3:])
    normal = np.cross(row, column)
    positions = np.array([h * normal + i * np.array(sideways) for i, h in enumerate(heights)])
    return positions, np.tile(orientation, (len(heights), 1))


def test_oblique_slices_are_ordered_along_their_normal():
    # Sagittal: rows run anterior->posterior, columns feet->head, so the normal points left (-x).
    sagittal = (0.0, 1.0, 0.0, 0.0, 0.0, -1.0)
    positions, orientations = stack([4.0, 0.0, 8.0, 2.0, 6.0], sagittal)
    geometry = slice_geometry(positions, orientations, 1.0, "test")
    assert geometry.order == (1, 3, 0, 4, 2)
    assert geometry.slice_spacing == pytest.approx(2.0)
    np.testing.assert_allclose(np.reshape(geometry.direction, (3, 3))[:, 2], [-1.0, 0.0, 0.0])
    np.testing.assert_allclose(geometry.origin, positions[1])
    assert geometry.irregularities == ()


def test_gap_and_gantry_tilt_are_reported_as_irregular():
    gapped = slice_geometry(*stack([0.0, 2.5, 5.0, 10.0, 12.5]), 1.0, "s")
    assert gapped.slice_spacing == pytest.approx(2.5)
    assert "about 1 slice(s) missing" in gapped.irregularities[0]
    three = slice_geometry(*stack([0.0, 5.0, 15.0]), 1.0, "s")
    assert three.slice_spacing == pytest.approx(5.0) and "about 1 slice(s) missing" in three.irregularities[0]
    tilted = slice_geometry(*stack([0.0, 5.0, 10.0], sideways=(0.0, 1.0, 0.0)), 1.0, "s")
    assert len(tilted.irregularities) == 1 and "gantry tilt" in tilted.irregularities[0]


def test_stacks_that_cannot_form_a_volume_are_refused():
    positions, orientations = stack([0.0, 1.0, 2.0])
    orientations[1] = (0.0, 1.0, 0.0, 0.0, 0.0, -1.0)
    with pytest.raises(SliceGeometryError, match="different orientations"):
        slice_geometry(positions, orientations, 1.0, "s")
    orientations[1] = (0.0, 0.0, 0.0, 0.0, 0.0, 0.0)
    with pytest.raises(SliceGeometryError, match="perpendicular unit vectors"):
        slice_geometry(positions[1:2], orientations[1:2], 1.0, "s")
    with pytest.raises(SliceGeometryError, match="order is unknown"):
        slice_geometry(positions, None, 1.0, "s")


def test_single_slice_takes_the_default_spacing():
    geometry = slice_geometry(*stack([3.0]), 5.0, "s")
    assert geometry.order == (0,) and geometry.slice_spacing == 5.0
    assert geometry.origin == pytest.approx((0.0, 0.0, 3.0))
