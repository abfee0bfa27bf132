"""The study viewer's state: the open study, its label overlay, the slice position and the window.

Three views (axial, coronal, sagittal) share one 3D position, so moving in one moves the others'
crosshair; each view asks the model for its slice pixels. Views subscribe to the signals below.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from app.models.colors import RGB, label_color
from app.models.orientation import (
    Reorientation,
    ViewAxis,
    view_pixel,
    view_pixel_size,
    view_slice,
    view_voxel,
)
from app.models.render import LabelStyle, color_table, labels_to_argb, window_to_gray
from app.models.signals import Signal
from app.models.study import Study
from app.models.window_level import WindowLevel, auto_window, default_window, preset_window
from segmentation.errors import GeometryMismatchError

if TYPE_CHECKING:
    from segmentation.volume import Volume

DEFAULT_OPACITY = 0.4
# Right-dragging across this many pixels changes the window by the study's robust value range.
DRAG_PIXELS_PER_RANGE = 400.0


@dataclass(frozen=True)
class LabelLayer:
    """One label of the overlay as the legend lists it."""

    value: int
    name: str
    color: RGB
    visible: bool = True


@dataclass(frozen=True)
class CursorInfo:
    """What lies under the mouse: stored voxel index (x, y, z), LPS position in mm, value, label."""

    voxel: tuple[int, int, int]
    position_mm: tuple[float, float, float]
    value: float
    unit: str
    label: str | None = None

    def describe(self) -> str:
        position = ", ".join(f"{v:.1f}" for v in self.position_mm)
        value = f"{self.value:.0f}" if float(self.value).is_integer() else f"{self.value:.4g}"
        text = f"({position}) mm · voxel {self.voxel} · {value}{' ' + self.unit if self.unit else ''}"
        return f"{text} · {self.label}" if self.label else text


class ViewerModel:
    """Signals: study_changed(), labels_changed(), position_changed(), window_changed(),
    modality_changed()."""

    def __init__(self) -> None:
        self.study_changed = Signal()
        self.labels_changed = Signal()
        self.position_changed = Signal()
        self.window_changed = Signal()
        self.modality_changed = Signal()
        self.study: Study | None = None
        self.label_volume: Volume | None = None
        self.label_source = ""
        self.label_path: Path | None = None  # the file the overlay was read from (None: a prediction)
        self.layers: dict[int, LabelLayer] = {}
        self.overlay_visible = True
        self.opacity = DEFAULT_OPACITY
        self.window = WindowLevel(400.0, 40.0)
        self.position = [0, 0, 0]
        self._reorientation = Reorientation()
        self._image: np.ndarray | None = None
        self._labels: np.ndarray | None = None
        self._spacing = (1.0, 1.0, 1.0)
        self._value_per_pixel = 1.0
        self._table = color_table((), self.opacity)

    # -- study and labels --------------------------------------------------------------------
    def set_study(self, study: Study, labels: Volume | None = None, label_source: str = "") -> None:
        """Show `study` from its middle, with its default window and optionally a label overlay."""
        image = study.image
        self.study = study
        self._reorientation = Reorientation.from_direction(image.direction)
        self._image = self._reorientation.apply(image.array)
        self._spacing = self._reorientation.canonical_spacing(image.spacing)
        self.position = [size // 2 for size in self._image.shape]
        self._value_per_pixel = auto_window(image.array).window / DRAG_PIXELS_PER_RANGE
        self.window = default_window(image.array, image.modality)
        self._clear_labels()
        self.study_changed.emit()
        self.set_labels(labels, label_source)

    def set_labels(self, labels: Volume | None, source: str = "", path: Path | None = None) -> None:
        """Overlay a label map on the study (None removes the overlay); it must share the study's grid.
        `path` is the file it was read from, if any (a dataset case can then take it along)."""
        if labels is not None:
            if self.study is None:
                raise GeometryMismatchError("open a study before its labels")
            differences = self.study.image.geometry_differences(labels)
            if differences:
                detail = "; ".join(differences)
                raise GeometryMismatchError(f"the labels do not line up with the study: {detail}")
        self._clear_labels()
        if labels is not None:
            self.label_volume, self.label_source, self.label_path = labels, source, path
            self._labels = self._reorientation.apply(labels.array)
            present = {int(v) for v in np.flatnonzero(np.bincount(labels.array.ravel()))} - {0}
            values = present | set(labels.labels)
            names = {value: labels.labels.get(value, f"label {value}") for value in values}
            self.layers = {value: LabelLayer(value, names[value], label_color(value))
                           for value in sorted(names) if value > 0}
            self.overlay_visible = True
        self._update_table()
        self.labels_changed.emit()

    def set_modality(self, modality: str) -> None:
        """Tag the open study with another modality (it decides HU readouts and the model's input)."""
        if self.study is not None and modality != self.study.modality:
            self.study = self.study.with_modality(modality)
            self.modality_changed.emit()

    def _clear_labels(self) -> None:
        self.label_volume, self.label_source, self._labels, self.layers = None, "", None, {}
        self.label_path = None

    @property
    def has_study(self) -> bool:
        return self.study is not None

    @property
    def has_labels(self) -> bool:
        return self._labels is not None

    # -- position ------------------------------------------------------------------------------
    def slice_count(self, axis: ViewAxis) -> int:
        return 0 if self._image is None else self._image.shape[axis.value]

    def slice_index(self, axis: ViewAxis) -> int:
        return self.position[axis.value]

    def set_slice(self, axis: ViewAxis, index: int) -> None:
        index = int(np.clip(index, 0, max(self.slice_count(axis) - 1, 0)))
        if index != self.position[axis.value]:
            self.position[axis.value] = index
            self.position_changed.emit()

    def step_slice(self, axis: ViewAxis, delta: int) -> None:
        self.set_slice(axis, self.slice_index(axis) + delta)

    def set_position(self, voxel: tuple[int, int, int]) -> None:
        """Move all three views to canonical voxel (z, y, x), clipped into the volume."""
        if self._image is None:
            return
        clipped = [int(np.clip(v, 0, size - 1)) for v, size in zip(voxel, self._image.shape, strict=True)]
        if clipped != self.position:
            self.position = clipped
            self.position_changed.emit()

    def move_to_pixel(self, axis: ViewAxis, row: int, column: int) -> None:
        """Move the shared position to the voxel under a view's pixel (a click in that view)."""
        if self._image is not None:
            self.set_position(view_voxel(self._image.shape, axis, self.slice_index(axis), row, column))

    def view_shape(self, axis: ViewAxis) -> tuple[int, int]:
        """(rows, columns) of a view's slice."""
        if self._image is None:
            return 0, 0
        return view_slice(self._image, axis, 0).shape  # type: ignore[return-value]

    def pixel_size(self, axis: ViewAxis) -> tuple[float, float]:
        """(row height, column width) in mm of a view's pixels."""
        return view_pixel_size(self._spacing, axis)

    def crosshair(self, axis: ViewAxis) -> tuple[int, int]:
        """The (row, column) of the shared position in a view."""
        return view_pixel(self._image.shape, axis, tuple(self.position))  # type: ignore[union-attr,arg-type]

    # -- window --------------------------------------------------------------------------------
    def set_window(self, window: WindowLevel) -> None:
        if window != self.window:
            self.window = window
            self.window_changed.emit()

    def apply_preset(self, name: str) -> None:
        if self.study is not None:
            self.set_window(preset_window(name, self.study.image.array))

    def drag_window(self, dx: float, dy: float) -> None:
        """Right-drag window/level: horizontal changes the window, vertical the level."""
        self.set_window(self.window.dragged(dx, dy, self._value_per_pixel))

    # -- overlay -------------------------------------------------------------------------------
    def set_overlay_visible(self, visible: bool) -> None:
        if visible != self.overlay_visible:
            self.overlay_visible = visible
            self.labels_changed.emit()

    def set_opacity(self, opacity: float) -> None:
        opacity = float(np.clip(opacity, 0.0, 1.0))
        if opacity != self.opacity:
            self.opacity = opacity
            self._update_table()
            self.labels_changed.emit()

    def set_layer(self, value: int, *, visible: bool | None = None, color: RGB | None = None) -> None:
        """Show/hide one label or change its colour."""
        layer = self.layers[value]
        changes = {k: v for k, v in (("visible", visible), ("color", color)) if v is not None}
        updated = replace(layer, **changes)
        if updated != layer:
            self.layers[value] = updated
            self._update_table()
            self.labels_changed.emit()

    def _update_table(self) -> None:
        styles = (LabelStyle(layer.value, layer.color, layer.visible) for layer in self.layers.values())
        self._table = color_table(styles, self.opacity)

    # -- pixels --------------------------------------------------------------------------------
    def gray_slice(self, axis: ViewAxis) -> np.ndarray | None:
        """The current slice of `axis` as uint8 grey values through the window."""
        if self._image is None:
            return None
        return window_to_gray(view_slice(self._image, axis, self.slice_index(axis)), self.window)

    def overlay_slice(self, axis: ViewAxis) -> np.ndarray | None:
        """The current slice's labels as uint32 premultiplied ARGB, or None when nothing is overlaid."""
        if self._labels is None or not self.overlay_visible:
            return None
        return labels_to_argb(view_slice(self._labels, axis, self.slice_index(axis)), self._table)

    def cursor(self, axis: ViewAxis, row: int, column: int) -> CursorInfo | None:
        """What lies under pixel (row, column) of a view, or None outside the slice."""
        if self._image is None or self.study is None:
            return None
        rows, columns = self.view_shape(axis)
        if not (0 <= row < rows and 0 <= column < columns):
            return None
        canonical = view_voxel(self._image.shape, axis, self.slice_index(axis), row, column)
        image = self.study.image
        z, y, x = self._reorientation.stored_index(canonical, image.shape)
        index = np.array([x, y, z], float)
        direction = np.asarray(image.direction, float).reshape(3, 3)
        position = np.asarray(image.origin, float) + direction @ (np.asarray(image.spacing, float) * index)
        label = None
        if self._labels is not None:
            value = int(self.label_volume.array[z, y, x])  # type: ignore[union-attr]
            label = self.layers[value].name if value in self.layers else None
        return CursorInfo(
            voxel=(int(x), int(y), int(z)),
            position_mm=tuple(float(v) for v in position),  # type: ignore[arg-type]
            value=float(image.array[z, y, x]),
            unit="HU" if image.modality == "ct" else "",
            label=label,
        )
