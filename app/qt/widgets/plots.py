"""Matplotlib canvases in the workbench's dark style (matplotlib loads with the first canvas)."""

from __future__ import annotations

import io
from collections.abc import Sequence

import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
from matplotlib.colors import to_rgba
from matplotlib.figure import Figure
from matplotlib.image import imread

from app.qt.theme import PALETTE

TEXT, MUTED, GRID = PALETTE["text"], PALETTE["muted"], PALETTE["border"]


def style_axes(axes: Axes, title: str, xlabel: str, ylabel: str) -> None:
    axes.set_facecolor(PALETTE["card"])
    axes.set_title(title, color=TEXT, fontsize=10, loc="left", pad=8)
    axes.set_xlabel(xlabel, color=MUTED, fontsize=8.5)
    axes.set_ylabel(ylabel, color=MUTED, fontsize=8.5)
    axes.tick_params(colors=MUTED, labelsize=8)
    axes.grid(True, color=GRID, linewidth=0.6)
    for side, spine in axes.spines.items():
        spine.set_visible(side in ("left", "bottom"))
        spine.set_color(PALETTE["border_strong"])


def style_legend(axes: Axes) -> None:
    """The legend beside the axes, right of them: never over a curve (the constrained layout makes room)."""
    if axes.get_legend_handles_labels()[0]:
        axes.legend(fontsize=8, frameon=False, labelcolor=TEXT, loc="upper left", bbox_to_anchor=(1.01, 1.0),
                    borderaxespad=0.0)


class Canvas(FigureCanvasQTAgg):
    """A figure with `columns` axes side by side."""

    def __init__(self, columns: int = 1) -> None:
        self.figure = Figure(figsize=(6, 3), dpi=100, facecolor=PALETTE["card"], layout="constrained")
        super().__init__(self.figure)
        self.setStyleSheet(f"background: {PALETTE['card']};")
        self.axes: Sequence[Axes] = [self.figure.add_subplot(1, columns, i + 1) for i in range(columns)]
        self.setMinimumHeight(220)


def rgb_to_mpl(rgb: tuple[int, int, int]) -> tuple[float, float, float]:
    return tuple(channel / 255 for channel in rgb)  # type: ignore[return-value]


def stacked_image(figures: Sequence[Figure], dpi: int = 150) -> np.ndarray:
    """The figures rendered at `dpi` and stacked top to bottom into one RGBA image (narrower ones padded
    on the right with the first figure's background), for exporting several charts as one PNG."""
    images = []
    for figure in figures:
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png", dpi=dpi, facecolor=figure.get_facecolor())
        buffer.seek(0)
        images.append(imread(buffer))
    width = max(image.shape[1] for image in images)
    background = np.array(to_rgba(figures[0].get_facecolor()), dtype=images[0].dtype)
    padded = []
    for image in images:
        pad = np.empty((image.shape[0], width - image.shape[1], 4), dtype=image.dtype)
        pad[...] = background
        padded.append(np.concatenate([image, pad], axis=1))
    return np.concatenate(padded, axis=0)
