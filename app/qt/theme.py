"""The workbench's look: one dark palette, the stylesheet in assets/, and the SVG icons there."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtGui import QColor, QIcon, QPalette
from PySide6.QtWidgets import QApplication

ASSETS = Path(__file__).resolve().parents[2] / "assets"
ICONS = ASSETS / "icons"

PALETTE = {
    "window": "#111318",
    "sidebar": "#0b0d11",
    "card": "#171a21",
    "raised": "#222733",
    "hover": "#2a3040",
    "input": "#0e1014",
    "border": "#242935",
    "border_strong": "#323a4a",
    "text": "#e4e8ef",
    "muted": "#8d96a8",
    "disabled": "#555d6c",
    "accent": "#3d7eff",
    "accent_hover": "#5590ff",
    "accent_soft": "#1d2f55",
    "accent_text": "#8fb4ff",
    "good": "#4cc38a",
    "good_soft": "#15372a",
    "bad": "#f2686a",
    "bad_soft": "#3d1c20",
    "warn": "#f0b64a",
    "warn_soft": "#3a2e14",
}


def stylesheet() -> str:
    """assets/style.qss with the palette's colours filled in."""
    text = (ASSETS / "style.qss").read_text(encoding="utf-8")
    for name, value in {**PALETTE, "icons": ICONS.as_posix()}.items():
        text = text.replace("{" + name + "}", value)
    return text


def apply_theme(app: QApplication) -> None:
    """Fusion with a dark palette (for what the stylesheet does not reach) plus the stylesheet."""
    app.setStyle("Fusion")
    palette = QPalette()
    roles = {
        QPalette.ColorRole.Window: "window", QPalette.ColorRole.WindowText: "text",
        QPalette.ColorRole.Base: "input", QPalette.ColorRole.AlternateBase: "card",
        QPalette.ColorRole.Text: "text", QPalette.ColorRole.Button: "raised",
        QPalette.ColorRole.ButtonText: "text", QPalette.ColorRole.Highlight: "accent",
        QPalette.ColorRole.ToolTipBase: "raised", QPalette.ColorRole.ToolTipText: "text",
        QPalette.ColorRole.PlaceholderText: "disabled", QPalette.ColorRole.Link: "accent_text",
    }
    for role, name in roles.items():
        palette.setColor(role, QColor(PALETTE[name]))
    palette.setColor(QPalette.ColorRole.HighlightedText, QColor("#ffffff"))
    for role in (QPalette.ColorRole.Text, QPalette.ColorRole.WindowText, QPalette.ColorRole.ButtonText):
        palette.setColor(QPalette.ColorGroup.Disabled, role, QColor(PALETTE["disabled"]))
    app.setPalette(palette)
    app.setStyleSheet(stylesheet())


def icon(name: str) -> QIcon:
    """An icon from assets/icons; its '-active' variant (if drawn) is used when checked or selected."""
    result = QIcon(str(ICONS / f"{name}.svg"))
    active = ICONS / f"{name}-active.svg"
    if active.is_file():
        for mode in (QIcon.Mode.Selected, QIcon.Mode.Active):
            result.addFile(str(active), mode=mode)
        result.addFile(str(active), mode=QIcon.Mode.Normal, state=QIcon.State.On)
    return result


def color(name: str) -> QColor:
    return QColor(PALETTE[name])
