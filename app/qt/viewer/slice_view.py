"""One orthogonal view of the viewer model: paints its slice and overlay, turns mouse input into
model changes (wheel: slice, right-drag: window/level, left-drag: pan, Ctrl+wheel: zoom)."""

from __future__ import annotations

import numpy as np
from PySide6.QtCore import QPointF, QRectF, Qt, Signal
from PySide6.QtGui import QColor, QFont, QImage, QMouseEvent, QPainter, QPen, QWheelEvent
from PySide6.QtWidgets import QWidget

from app.models.orientation import EDGE_LABELS, ViewAxis
from app.models.viewer import ViewerModel
from app.qt.theme import color

ZOOM_STEP = 1.15
ZOOM_RANGE = (0.25, 16.0)
DRAG_THRESHOLD = 3  # pixels a left press may move and still count as a click
TEXT = QColor(228, 232, 239)
SHADOW = QColor(0, 0, 0, 200)


def gray_qimage(array: np.ndarray) -> QImage:
    """A QImage over a C-contiguous uint8 array (no copy: keep the array alive while it is used)."""
    rows, columns = array.shape
    return QImage(array.data, columns, rows, array.strides[0], QImage.Format.Format_Grayscale8)


def argb_qimage(array: np.ndarray) -> QImage:
    """A QImage over a C-contiguous uint32 premultiplied-ARGB array (no copy)."""
    return QImage(array.data, array.shape[1], array.shape[0], array.strides[0],
                  QImage.Format.Format_ARGB32_Premultiplied)


def paint_slice(painter: QPainter, target: QRectF, gray: QImage, overlay: QImage | None) -> None:
    """Draw a slice and its label overlay scaled into `target` (bilinear)."""
    painter.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform, True)
    painter.drawImage(target, gray)
    if overlay is not None:
        painter.drawImage(target, overlay)


class SliceView(QWidget):
    """Signals: cursor_moved(CursorInfo | None) as the mouse moves over the image."""

    cursor_moved = Signal(object)

    def __init__(self, model: ViewerModel, axis: ViewAxis, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.model, self.axis = model, axis
        self.show_crosshair = False
        self.zoom = 1.0
        self.pan = QPointF(0.0, 0.0)
        self._arrays: tuple[np.ndarray | None, np.ndarray | None] = (None, None)
        self._gray: QImage | None = None
        self._overlay: QImage | None = None
        self._rendered_index = -1
        self._press: QPointF | None = None
        self._last: QPointF | None = None
        self._button = Qt.MouseButton.NoButton
        self._dragged = False
        self.setMouseTracking(True)
        self.setFocusPolicy(Qt.FocusPolicy.StrongFocus)
        self.setMinimumSize(160, 160)
        self.setAttribute(Qt.WidgetAttribute.WA_OpaquePaintEvent, True)
        model.study_changed.connect(self._on_study)
        model.position_changed.connect(self._on_position)
        model.window_changed.connect(self.render)
        model.labels_changed.connect(self.render)
        model.modality_changed.connect(self.update)
        if model.has_study:
            self.render()

    # -- model -> pixels -------------------------------------------------------------------
    def render(self) -> None:
        """Recompute this view's images from the model and repaint."""
        gray = self.model.gray_slice(self.axis)
        overlay = self.model.overlay_slice(self.axis)
        self._arrays = (gray, overlay)
        self._gray = None if gray is None else gray_qimage(gray)
        self._overlay = None if overlay is None else argb_qimage(overlay)
        self._rendered_index = self.model.slice_index(self.axis)
        self.update()

    def _on_study(self) -> None:
        self.reset_view()
        self.render()

    def _on_position(self) -> None:
        if self.model.slice_index(self.axis) != self._rendered_index:
            self.render()
        elif self.show_crosshair:
            self.update()

    def reset_view(self) -> None:
        self.zoom, self.pan = 1.0, QPointF(0.0, 0.0)
        self.update()

    @property
    def rendered_pixels(self) -> tuple[np.ndarray | None, np.ndarray | None]:
        """The grey and overlay arrays last painted (what tests and screenshots check)."""
        return self._arrays

    # -- geometry ----------------------------------------------------------------------------
    def _fitted_rect(self, zoom: float) -> QRectF:
        """Where the slice goes at `zoom`, centred and unpanned, keeping the pixels' physical aspect."""
        rows, columns = self.model.view_shape(self.axis)
        row_mm, column_mm = self.model.pixel_size(self.axis)
        width_mm, height_mm = columns * column_mm, rows * row_mm
        if not width_mm or not height_mm:
            return QRectF()
        scale = min(self.width() / width_mm, self.height() / height_mm) * zoom
        width, height = width_mm * scale, height_mm * scale
        return QRectF((self.width() - width) / 2, (self.height() - height) / 2, width, height)

    def image_rect(self) -> QRectF:
        return self._fitted_rect(self.zoom).translated(self.pan)

    def pixel_at(self, point: QPointF) -> tuple[int, int] | None:
        """The slice's (row, column) under a widget point, or None outside the image."""
        rect = self.image_rect()
        if rect.isEmpty() or not rect.contains(point):
            return None
        rows, columns = self.model.view_shape(self.axis)
        row = int((point.y() - rect.top()) / rect.height() * rows)
        column = int((point.x() - rect.left()) / rect.width() * columns)
        return min(row, rows - 1), min(column, columns - 1)

    # -- painting ----------------------------------------------------------------------------
    def paintEvent(self, event) -> None:  # noqa: N802 - Qt's name
        painter = QPainter(self)
        painter.fillRect(self.rect(), QColor(0, 0, 0))
        if self._gray is None:
            painter.setPen(color("muted"))
            painter.drawText(self.rect(), Qt.AlignmentFlag.AlignCenter, "No study open")
            return
        rect = self.image_rect()
        paint_slice(painter, rect, self._gray, self._overlay)
        if self.show_crosshair:
            self._paint_crosshair(painter, rect)
        self._paint_annotations(painter)

    def _paint_crosshair(self, painter: QPainter, rect: QRectF) -> None:
        rows, columns = self.model.view_shape(self.axis)
        row, column = self.model.crosshair(self.axis)
        x = rect.left() + (column + 0.5) / columns * rect.width()
        y = rect.top() + (row + 0.5) / rows * rect.height()
        accent = color("accent")
        accent.setAlpha(150)
        painter.setPen(QPen(accent, 1, Qt.PenStyle.DashLine))
        painter.drawLine(QPointF(rect.left(), y), QPointF(rect.right(), y))
        painter.drawLine(QPointF(x, rect.top()), QPointF(x, rect.bottom()))

    def _paint_annotations(self, painter: QPainter) -> None:
        font = QFont(self.font())
        font.setPointSizeF(9.0)
        painter.setFont(font)
        margin = 8
        area = self.rect().adjusted(margin, margin, -margin, -margin)
        index, count = self.model.slice_index(self.axis) + 1, self.model.slice_count(self.axis)
        window = self.model.window
        top_left = f"{self.axis.title}  {index} / {count}"
        bottom_left = f"W {window.window:.0f}   L {window.level:.0f}"
        top_right = f"{self.zoom * 100:.0f} %" if abs(self.zoom - 1.0) > 1e-3 else ""
        align = Qt.AlignmentFlag
        for text, flags in ((top_left, align.AlignLeft | align.AlignTop),
                            (bottom_left, align.AlignLeft | align.AlignBottom),
                            (top_right, align.AlignRight | align.AlignTop)):
            _shadowed_text(painter, area, flags, text)
        top, bottom, left, right = EDGE_LABELS[self.axis]
        for text, flags in ((top, align.AlignHCenter | align.AlignTop),
                            (bottom, align.AlignHCenter | align.AlignBottom),
                            (left, align.AlignLeft | align.AlignVCenter),
                            (right, align.AlignRight | align.AlignVCenter)):
            _shadowed_text(painter, area, flags, text)

    # -- input -------------------------------------------------------------------------------
    def wheelEvent(self, event: QWheelEvent) -> None:  # noqa: N802
        steps = event.angleDelta().y() / 120
        if not steps:
            return
        if event.modifiers() & Qt.KeyboardModifier.ControlModifier:
            self.zoom_at(event.position(), ZOOM_STEP ** steps)
        else:
            self.model.step_slice(self.axis, 1 if steps > 0 else -1)
        event.accept()

    def zoom_at(self, point: QPointF, factor: float) -> None:
        """Zoom by `factor`, keeping the image point under `point` where it is."""
        old = self.image_rect()
        zoom = float(np.clip(self.zoom * factor, *ZOOM_RANGE))
        if old.isEmpty() or zoom == self.zoom:
            return
        fraction_x = (point.x() - old.left()) / old.width()
        fraction_y = (point.y() - old.top()) / old.height()
        fitted = self._fitted_rect(zoom)
        self.zoom = zoom
        self.pan = QPointF(point.x() - fraction_x * fitted.width() - fitted.left(),
                           point.y() - fraction_y * fitted.height() - fitted.top())
        self.update()

    def mousePressEvent(self, event: QMouseEvent) -> None:  # noqa: N802
        self._press = self._last = event.position()
        self._button, self._dragged = event.button(), False
        event.accept()

    def mouseMoveEvent(self, event: QMouseEvent) -> None:  # noqa: N802
        point = event.position()
        if self._last is not None:
            delta = point - self._last
            moved = point - self._press  # type: ignore[operator]
            if abs(moved.x()) + abs(moved.y()) > DRAG_THRESHOLD:
                self._dragged = True
            if self._button == Qt.MouseButton.RightButton:
                self.model.drag_window(delta.x(), delta.y())
            elif self._button in (Qt.MouseButton.LeftButton, Qt.MouseButton.MiddleButton) and self._dragged:
                self.pan += delta
                self.update()
            self._last = point
        self._report_cursor(point)

    def mouseReleaseEvent(self, event: QMouseEvent) -> None:  # noqa: N802
        if self._button == Qt.MouseButton.LeftButton and not self._dragged:
            pixel = self.pixel_at(event.position())
            if pixel is not None:
                self.model.move_to_pixel(self.axis, *pixel)
        self._press = self._last = None
        self._button = Qt.MouseButton.NoButton

    def mouseDoubleClickEvent(self, event: QMouseEvent) -> None:  # noqa: N802
        self.reset_view()

    def leaveEvent(self, event) -> None:  # noqa: N802
        self.cursor_moved.emit(None)

    def keyPressEvent(self, event) -> None:  # noqa: N802
        keys = {Qt.Key.Key_Up: 1, Qt.Key.Key_Down: -1, Qt.Key.Key_PageUp: 10, Qt.Key.Key_PageDown: -10}
        if event.key() in keys:
            self.model.step_slice(self.axis, keys[event.key()])
        else:
            super().keyPressEvent(event)

    def _report_cursor(self, point: QPointF) -> None:
        pixel = self.pixel_at(point)
        self.cursor_moved.emit(None if pixel is None else self.model.cursor(self.axis, *pixel))


def _shadowed_text(painter: QPainter, area, flags, text: str) -> None:
    if not text:
        return
    painter.setPen(SHADOW)
    painter.drawText(area.translated(1, 1), flags, text)
    painter.setPen(TEXT)
    painter.drawText(area, flags, text)
