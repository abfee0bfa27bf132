"""Small writers for experiment reports: Markdown tables, JSON, and bar charts as PNG.

Reports are what people read after a long run, so they are plain files any tool opens.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from segmentation.atomic import write_text_atomic


def write_json(data: Any, path: Path) -> Path:
    """Write JSON atomically: readers never see half a report."""
    return write_text_atomic(path, json.dumps(data, indent=2, allow_nan=False) + "\n")


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A GitHub-flavoured Markdown table; floats are shown with three decimals."""

    def cell(value: Any) -> str:
        return f"{value:.3f}" if isinstance(value, float) else str(value)

    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def grouped_bar_chart(
    values: Mapping[str, Mapping[str, float]],
    path: Path,
    *,
    title: str,
    ylabel: str,
    ylim: tuple[float, float] = (0.0, 1.0),
) -> Path:
    """One group of bars per outer key (e.g. augmentation), one bar per inner key (e.g. modality)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = list(values)
    series = list(dict.fromkeys(name for group in values.values() for name in group))
    width = 0.8 / max(1, len(series))
    figure, axes = plt.subplots(figsize=(max(6.0, 1.2 * len(groups) + 2), 4.2), dpi=120)
    for index, name in enumerate(series):
        offsets = [g + (index - (len(series) - 1) / 2) * width for g in range(len(groups))]
        heights = [values[group].get(name, float("nan")) for group in groups]
        bars = axes.bar(offsets, heights, width, label=name)
        axes.bar_label(bars, fmt="%.2f", fontsize=7, padding=2)
    axes.set_xticks(range(len(groups)), groups)
    axes.set_ylim(*ylim)
    axes.set_ylabel(ylabel)
    axes.set_title(title)
    axes.legend(frameon=False, ncols=len(series), loc="upper center", bbox_to_anchor=(0.5, -0.1))
    axes.grid(axis="y", alpha=0.3)
    axes.spines[["top", "right"]].set_visible(False)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    plt.close(figure)
    return path


def line_chart(
    series: Mapping[str, Mapping[float, float]],
    path: Path,
    *,
    title: str,
    xlabel: str,
    ylabel: str,
    ylim: tuple[float, float] = (0.0, 1.0),
    dashed: Sequence[str] = (),
) -> Path:
    """One line per series (x -> y points, e.g. Dice per round); names in `dashed` are drawn dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    figure, axes = plt.subplots(figsize=(7.0, 4.2), dpi=120)
    if all(isinstance(x, int) for points in series.values() for x in points):
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    for name, points in series.items():
        xs = sorted(points)
        axes.plot(xs, [points[x] for x in xs], marker="o", markersize=3, label=name,
                  linestyle="--" if name in dashed else "-")
    axes.set_ylim(*ylim)
    axes.set_xlabel(xlabel)
    axes.set_ylabel(ylabel)
    axes.set_title(title)
    if series:  # an empty chart (no rounds recorded yet) has nothing to name
        axes.legend(frameon=False, fontsize=8)
    axes.grid(alpha=0.3)
    axes.spines[["top", "right"]].set_visible(False)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    plt.close(figure)
    return path
