"""Small building blocks every page uses, so that spacing and typography stay the same everywhere."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QFrame,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QProgressBar,
    QPushButton,
    QSizePolicy,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from app.qt.theme import icon

SPACING = 12
MARGIN = 16


class Card(QFrame):
    """A rounded panel with an optional title row (`.header`, for widgets beside the title); add
    content to `.body` (a QVBoxLayout)."""

    def __init__(self, title: str = "", subtitle: str = "", parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("Card")
        self.body = QVBoxLayout(self)
        self.body.setContentsMargins(MARGIN, MARGIN, MARGIN, MARGIN)
        self.body.setSpacing(10)
        self.header = QHBoxLayout()
        self.header.setSpacing(10)
        if title:
            heading = QLabel(title)
            heading.setObjectName("CardTitle")
            self.header.addWidget(heading)
            self.body.addLayout(self.header)
        if subtitle:
            self.body.addWidget(hint(subtitle))


class Page(QWidget):
    """A page: title and subtitle on top, then `.content` (a QVBoxLayout) for the page's widgets."""

    def __init__(self, title: str, subtitle: str, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("Page")
        self.setAttribute(Qt.WidgetAttribute.WA_StyledBackground, True)
        outer = QVBoxLayout(self)
        outer.setContentsMargins(24, 20, 24, 20)
        outer.setSpacing(16)
        header = QVBoxLayout()
        header.setSpacing(2)
        heading = QLabel(title)
        heading.setObjectName("PageTitle")
        header.addWidget(heading)
        caption = QLabel(subtitle)
        caption.setObjectName("PageSubtitle")
        caption.setWordWrap(True)
        header.addWidget(caption)
        outer.addLayout(header)
        self.content = QVBoxLayout()
        self.content.setSpacing(SPACING)
        outer.addLayout(self.content, 1)


def hint(text: str) -> QLabel:
    """A muted, wrapping explanatory line."""
    label = QLabel(text)
    label.setObjectName("Hint")
    label.setWordWrap(True)
    return label


def button(text: str, icon_name: str = "", primary: bool = False, object_name: str = "") -> QPushButton:
    widget = QPushButton(f" {text}" if icon_name else text)  # a space between icon and text
    if icon_name:
        widget.setIcon(icon(icon_name))
    if primary:
        widget.setObjectName("Primary")
    elif object_name:
        widget.setObjectName(object_name)
    widget.setCursor(Qt.CursorShape.PointingHandCursor)
    return widget


class Badge(QLabel):
    """A pill showing a state; tone is one of '', 'running', 'good', 'bad', 'warn'."""

    def __init__(self, text: str = "", tone: str = "") -> None:
        super().__init__(text)
        self.setObjectName("Badge")
        self.setSizePolicy(QSizePolicy.Policy.Maximum, QSizePolicy.Policy.Fixed)
        self.set(text, tone)

    def set(self, text: str, tone: str = "") -> None:
        self.setText(text)
        self.setProperty("tone", tone)
        self.style().unpolish(self)
        self.style().polish(self)


class StatusCard(Card):
    """A job's state as the pages show it: a badge and a sentence beside the title, and a progress bar
    (0 to 1000) on top of the body."""

    def __init__(self, title: str, state: str) -> None:
        super().__init__(title)
        self.badge = Badge(state)
        self.header.addWidget(self.badge)
        self.message = hint("")
        self.header.addWidget(self.message, 1)
        self.bar = QProgressBar()
        self.bar.setRange(0, 1000)
        self.body.addWidget(self.bar)


class MetricTile(QWidget):
    """A big number with a caption under it."""

    def __init__(self, caption: str, value: str = "—") -> None:
        super().__init__()
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(0)
        self.value = QLabel(value)
        self.value.setObjectName("Metric")
        layout.addWidget(self.value)
        label = QLabel(caption)
        label.setObjectName("MetricCaption")
        layout.addWidget(label)

    def set(self, value: str) -> None:
        self.value.setText(value)


class PathField(QWidget):
    """A path line edit with a Browse button; mode is 'file', 'folder' or 'save'. Emits changed(str)."""

    changed = Signal(str)

    def __init__(
        self, mode: str = "file", caption: str = "", filters: str = "", placeholder: str = ""
    ) -> None:
        super().__init__()
        self.mode, self.caption, self.filters = mode, caption, filters
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(6)
        self.edit = QLineEdit()
        self.edit.setPlaceholderText(placeholder)
        self.edit.textChanged.connect(self.changed)
        layout.addWidget(self.edit, 1)
        browse = QPushButton("Browse…")
        browse.clicked.connect(self.browse)
        layout.addWidget(browse)

    @property
    def path(self) -> Path | None:
        text = self.edit.text().strip()
        return Path(text).expanduser() if text else None

    def set_path(self, path: str | Path | None) -> None:
        self.edit.setText("" if path is None else str(path))

    def browse(self) -> None:
        start = self.edit.text() or str(Path.home())
        if self.mode == "folder":
            chosen = QFileDialog.getExistingDirectory(self, self.caption, start)
        elif self.mode == "save":
            chosen, _ = QFileDialog.getSaveFileName(self, self.caption, start, self.filters)
        else:
            chosen, _ = QFileDialog.getOpenFileName(self, self.caption, start, self.filters)
        if chosen:
            self.set_path(chosen)


def int_field(minimum: int, maximum: int, tooltip: str = "", suffix: str = "") -> QSpinBox:
    """A whole-number field from `minimum` to `maximum`."""
    box = QSpinBox()
    box.setRange(minimum, maximum)
    box.setToolTip(tooltip)
    box.setSuffix(suffix)
    return box


def float_field(minimum: float, maximum: float, decimals: int, step: float = 1.0, tooltip: str = "",
                suffix: str = "") -> QDoubleSpinBox:
    """A number field from `minimum` to `maximum` with `decimals` places."""
    box = QDoubleSpinBox()
    box.setRange(minimum, maximum)
    box.setDecimals(decimals)
    box.setSingleStep(step)
    box.setToolTip(tooltip)
    box.setSuffix(suffix)
    return box


def combo(items: list[tuple[str, str]], current: str = "") -> QComboBox:
    """A combo box of (value, caption) pairs, the value stored as item data."""
    box = QComboBox()
    for value, caption in items:
        box.addItem(caption, value)
    index = box.findData(current)
    if index >= 0:
        box.setCurrentIndex(index)
    return box


def separator() -> QFrame:
    line = QFrame()
    line.setFrameShape(QFrame.Shape.VLine)
    line.setStyleSheet("color: #323a4a;")
    return line
