"""Label colours: distinct, saturated hues that stay readable over grey anatomy."""

from __future__ import annotations

RGB = tuple[int, int, int]

PALETTE: tuple[RGB, ...] = (
    (230, 85, 80),    # red
    (80, 160, 245),   # blue
    (110, 205, 100),  # green
    (245, 190, 60),   # amber
    (175, 120, 235),  # violet
    (60, 205, 200),   # teal
    (240, 130, 190),  # pink
    (250, 140, 60),   # orange
    (170, 210, 70),   # lime
    (120, 135, 250),  # indigo
    (210, 165, 115),  # tan
    (100, 225, 165),  # mint
)


def label_color(value: int) -> RGB:
    """The default colour of label `value` (1 is the first palette entry; the palette repeats)."""
    return PALETTE[(value - 1) % len(PALETTE)]


def hex_color(rgb: RGB) -> str:
    return "#{:02x}{:02x}{:02x}".format(*rgb)
