"""The viewer's plain-Python state: orientation, window/level, slice pixels, overlay and cursor."""

from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from app.models.orientation import (
    Reorientation,
    ViewAxis,
    orientation_code,
    view_pixel,
    view_slice,
    view_voxel,
)
from app.models.render import LabelStyle, color_table, labels_to_argb, window_to_gray
from app.models.study import MODALITY_CAPTIONS, Study
from app.models.viewer import ViewerModel
from app.models.window_level import CT_PRESETS, WindowLevel, auto_window, preset_window
from segmentation.errors import GeometryMismatchError
from segmentation.volume import MODALITIES, Volume

FLIPPED_XY = (-1.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0, 1.0)  # slicerio's chest CT: RAS-stored axes


def make_study(shape=(4, 6, 8), direction=FLIPPED_XY, modality="ct", seed=0) -> Study:
    rng = np.random.default_rng(seed)
    array = rng.integers(-1000, 1000, size=shape).astype(np.int16)
    volume = Volume(array, spacing=(0.5, 0.75, 2.0), origin=(10.0, -20.0, 30.0), direction=direction,
                    modality=modality)
    return Study(volume, source=Path("study.nii.gz"), name="study")


def test_modality_captions_cover_the_engine_modalities():
    assert tuple(MODALITY_CAPTIONS) == MODALITIES


def test_window_presets_drag_and_auto_window():
    soft = preset_window("CT soft tissue", np.zeros(3))
    assert (soft.low, soft.high) == (-160.0, 240.0)
    dragged = soft.dragged(dx=10, dy=-5, value_per_pixel=2.0)
    assert dragged.window == pytest.approx(420.0) and dragged.level == pytest.approx(50.0)
    assert soft.dragged(dx=-10_000, dy=0, value_per_pixel=2.0).window == pytest.approx(2.0)
    auto = auto_window(np.arange(1001, dtype=float))
    assert (auto.low, auto.high) == pytest.approx((10.0, 990.0))
    with pytest.raises(ValueError):
        WindowLevel(0.0, 10.0)
    with pytest.raises(KeyError):
        preset_window("CT brain", np.zeros(3))
    assert set(CT_PRESETS) == {"CT soft tissue", "CT lung", "CT bone"}


def test_reorientation_puts_any_stored_order_in_patient_order():
    array = np.arange(2 * 3 * 4).reshape(2, 3, 4)
    flipped = Reorientation.from_direction(FLIPPED_XY)
    assert flipped.flips == (False, True, True)
    np.testing.assert_array_equal(flipped.apply(array), array[:, ::-1, ::-1])
    # Stored axes permuted: x runs along S, y along L, z along P (a sagittal acquisition).
    permuted = (0.0, 1.0, 0.0, 0.0, 0.0, 1.0, 1.0, 0.0, 0.0)
    reorientation = Reorientation.from_direction(permuted)
    canonical = reorientation.apply(array)
    assert canonical.shape == (4, 2, 3)  # (S, P, L) = stored (x, z, y)
    assert reorientation.canonical_spacing((1.0, 2.0, 3.0)) == (1.0, 3.0, 2.0)
    for index in [(0, 0, 0), (3, 1, 2), (2, 0, 1)]:
        stored = reorientation.stored_index(index, array.shape)
        assert canonical[index] == array[stored]
    assert orientation_code(FLIPPED_XY) == "RAS"
    assert orientation_code(permuted) == "SLP"


@pytest.mark.parametrize("axis", list(ViewAxis))
def test_view_pixels_and_voxels_are_inverse(axis):
    shape = (5, 6, 7)
    canonical = np.arange(np.prod(shape)).reshape(shape)
    image = view_slice(canonical, axis, 2)
    for row, column in [(0, 0), (image.shape[0] - 1, 1), (2, image.shape[1] - 1)]:
        voxel = view_voxel(shape, axis, 2, row, column)
        assert canonical[voxel] == image[row, column]
        assert view_pixel(shape, axis, voxel) == (row, column)


def test_window_to_gray_and_label_colours():
    gray = window_to_gray(np.array([[-200.0, -160.0, 40.0, 240.0, 999.0]]), WindowLevel(400.0, 40.0))
    assert gray.dtype == np.uint8 and gray.flags.c_contiguous
    assert gray.tolist() == [[0, 0, 127, 255, 255]]
    table = color_table([LabelStyle(1, (200, 100, 50)), LabelStyle(2, (10, 20, 30), visible=False)], 0.5)
    assert table[0] == 0 and table[2] == 0
    alpha = 128
    red, green, blue = (channel * alpha // 255 for channel in (200, 100, 50))  # premultiplied
    assert table[1] == (alpha << 24) | (red << 16) | (green << 8) | blue
    argb = labels_to_argb(np.array([[0, 1, 2, 70000, -3]], dtype=np.int64), table)
    assert argb.tolist() == [[0, int(table[1]), 0, 0, 0]]


def test_viewer_model_slices_overlay_and_signals():
    study = make_study()
    model = ViewerModel()
    seen = []
    for name in ("study_changed", "labels_changed", "position_changed", "window_changed"):
        getattr(model, name).connect(lambda name=name: seen.append(name))
    model.set_study(study)
    assert model.position == [2, 3, 4]
    assert model.window == CT_PRESETS["CT soft tissue"]
    assert model.view_shape(ViewAxis.AXIAL) == (6, 8)
    assert model.view_shape(ViewAxis.CORONAL) == (4, 8)
    assert model.pixel_size(ViewAxis.SAGITTAL) == (2.0, 0.75)
    labels = np.zeros(study.image.shape, np.uint8)
    labels[2, 1:3, 1:3] = 1
    model.set_labels(study.image.with_array(labels, labels={1: "liver"}), "truth.nii.gz")
    assert [layer.name for layer in model.layers.values()] == ["liver"]
    overlay = model.overlay_slice(ViewAxis.AXIAL)
    assert np.count_nonzero(overlay) == 4  # the flipped y/x axes move but keep the 2x2 square
    model.set_layer(1, visible=False)
    assert np.count_nonzero(model.overlay_slice(ViewAxis.AXIAL)) == 0
    before = model.gray_slice(ViewAxis.AXIAL)
    model.drag_window(50, 0)
    assert not np.array_equal(before, model.gray_slice(ViewAxis.AXIAL))
    model.step_slice(ViewAxis.AXIAL, 10)
    assert model.slice_index(ViewAxis.AXIAL) == 3  # clipped to the last slice
    assert {"study_changed", "labels_changed", "position_changed", "window_changed"} <= set(seen)
    with pytest.raises(GeometryMismatchError):
        model.set_labels(Volume(np.zeros((2, 2, 2), np.uint8)))


def test_cursor_reports_hounsfield_units_at_the_physical_position():
    study = make_study()
    model = ViewerModel()
    model.set_study(study)
    image = study.image
    info = model.cursor(ViewAxis.AXIAL, 1, 2)
    x, y, z = info.voxel
    assert info.value == image.array[z, y, x] and info.unit == "HU"
    physical = image.to_sitk().TransformIndexToPhysicalPoint((x, y, z))
    assert info.position_mm == pytest.approx(physical)
    assert z == model.slice_index(ViewAxis.AXIAL)
    assert (x, y) == (8 - 1 - 2, 6 - 1 - 1)  # both in-plane axes are stored flipped
    assert model.cursor(ViewAxis.AXIAL, 99, 0) is None
    model.set_modality("mr")
    assert model.cursor(ViewAxis.AXIAL, 1, 2).unit == ""
    assert "HU" in info.describe()


def test_clicking_a_view_moves_the_other_views():
    model = ViewerModel()
    model.set_study(make_study(direction=sitk.Image(2, 2, 2, sitk.sitkUInt8).GetDirection()))
    model.move_to_pixel(ViewAxis.AXIAL, 1, 5)
    assert model.slice_index(ViewAxis.CORONAL) == 1 and model.slice_index(ViewAxis.SAGITTAL) == 5
    assert model.crosshair(ViewAxis.AXIAL) == (1, 5)
