"""The phantom's anatomy: one random abdomen per case, as a map of tissue classes.

Every modality renders the same tissue map (see appearance.py), so a case looks different in CT, T1
and T2 while its organs keep their shape: exactly the gap cross-modality training has to bridge.
Placement follows axial abdominal anatomy in radiological view: the liver on the image's left
(patient's right), the spleen posterior on the right, kidneys beside the spine, the thin pancreas
curving in front of the aorta, with bowel loops, vessels, muscles and bone as unlabeled distractors.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

import numpy as np

from segmentation.synth.shapes import SmoothField, bezier, ellipsoid, grid, superellipse, tube


class Tissue(IntEnum):
    """Tissue classes the renderer colours; several can belong to one label (kidney)."""

    AIR = 0
    FAT = 1
    MUSCLE = 2
    BONE = 3
    MARROW = 4
    LUNG = 5
    VESSEL = 6
    BOWEL = 7
    FLUID = 8
    GAS = 9
    LIVER = 10
    KIDNEY = 11
    MEDULLA = 12
    SPLEEN = 13
    PANCREAS = 14


LABELS: dict[int, str] = {0: "background", 1: "liver", 2: "kidney", 3: "spleen", 4: "pancreas"}

_LABEL_OF_TISSUE = np.zeros(len(Tissue), np.uint8)
_LABELLED = [Tissue.LIVER, Tissue.KIDNEY, Tissue.MEDULLA, Tissue.SPLEEN, Tissue.PANCREAS]
_LABEL_OF_TISSUE[_LABELLED] = [1, 2, 2, 3, 4]


@dataclass(frozen=True)
class Anatomy:
    """One case: a (z, y, x) uint8 map of Tissue values."""

    tissues: np.ndarray

    @property
    def labels(self) -> np.ndarray:
        """The label map (values of LABELS) the segmentation model has to recover."""
        return _LABEL_OF_TISSUE[self.tissues]


class _Painter:
    """Paints structures onto a tissue map in patient coordinates, with per-case random variation."""

    def __init__(self, points: np.ndarray, rng: np.random.Generator) -> None:
        self.points = points
        self.rng = rng
        self.tissues = np.full(points.shape[1:], Tissue.AIR, np.uint8)

    def jitter(self, center: tuple[float, ...], spread: float) -> tuple[float, ...]:
        return tuple(c + self.rng.normal(0.0, spread) for c in center)

    def resize(self, radii: tuple[float, ...], low: float = 0.85, high: float = 1.15) -> tuple[float, ...]:
        return tuple(r * self.rng.uniform(low, high) for r in radii)

    def wobble(self, amount: float) -> np.ndarray:
        return amount * SmoothField.sample(self.rng, cycles=1.5)(self.points)

    def paint(self, mask: np.ndarray, tissue: Tissue, where: np.ndarray | None = None) -> None:
        self.tissues[mask if where is None else mask & where] = tissue

    def organ(self, center, radii, angle: float = 0.0, roughness: float = 0.25) -> np.ndarray:
        """An ellipsoidal organ jittered in place, size and angle, with a smoothly irregular surface."""
        return ellipsoid(
            self.points, self.jitter(center, 0.03), self.resize(radii),
            angle + self.rng.normal(0.0, 0.1), self.wobble(roughness),
        )


def patient_coordinates(points: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Scanner coordinates -> this patient's body coordinates: size, aspect, position and scanned
    range vary, and a smooth displacement field deforms everything a little."""
    warped = points + 0.03 * np.stack([SmoothField.sample(rng, cycles=1.0)(points) for _ in range(3)])
    scale, aspect, angle = rng.uniform(0.95, 1.1), rng.uniform(0.9, 1.1), rng.normal(0.0, 0.05)
    shift_u, shift_v, shift_t = rng.normal(0.0, 0.03), rng.normal(0.0, 0.03), rng.normal(0.0, 0.1)
    u = np.cos(angle) * warped[0] + np.sin(angle) * warped[1]
    v = -np.sin(angle) * warped[0] + np.cos(angle) * warped[1]
    t = warped[2] * rng.uniform(0.9, 1.1)
    return np.stack([(u - shift_u) / scale, (v - shift_v) / (scale * aspect), t - shift_t]).astype(np.float32)


def sample_anatomy(
    rng: np.random.Generator, size: int, depth: int, *, height: int | None = None,
    span: tuple[float, float, float] = (1.0, 1.0, 1.0),
) -> Anatomy:
    """A random abdomen on a (depth, height, size) grid (height defaults to size) reaching `span` units
    of the body frame either way (see shapes.grid); depth 1 is one axial slice at kidney level.

    The random draws never depend on the grid, so one rng gives the same body at any grid.
    """
    level = rng.uniform(-0.2, 0.05) if depth == 1 else 0.0
    points = grid(depth, size if height is None else height, size, level, span)
    painter = _Painter(patient_coordinates(points, rng), rng)
    cavity = _body_wall(painter)
    _thorax_and_bowel(painter, cavity)
    _organs(painter, cavity)
    _spine_muscles_vessels(painter)
    return Anatomy(painter.tissues)


def _body_wall(painter: _Painter) -> np.ndarray:
    """Skin outline, subcutaneous fat and the muscle wall; returns the abdominal cavity mask."""
    points, rng = painter.points, painter.rng
    t = points[2]
    radii = (0.84 * (1 + 0.05 * t), 0.60 * (1 + 0.05 * t))
    fat, wall = rng.uniform(0.035, 0.12), rng.uniform(0.03, 0.05)
    center = (0.0, 0.04)
    body = superellipse(points, center, radii, 2.4)
    inside_fat = superellipse(points, center, (radii[0] - fat, radii[1] - fat), 2.4)
    cavity = superellipse(points, center, (radii[0] - fat - wall, radii[1] - fat - wall), 2.4)
    painter.paint(body, Tissue.FAT)
    painter.paint(inside_fat, Tissue.MUSCLE)
    painter.paint(cavity, Tissue.FAT)
    for _ in range(rng.integers(7, 11)):  # ribs: bony ovals in the wall of the upper abdomen
        theta = rng.choice([-1.0, 1.0]) * rng.uniform(0.35, 2.7) + 0.15 * t
        ring = (radii[0] - fat - wall / 2, radii[1] - fat - wall / 2)
        rib = ellipsoid(points, (ring[0] * np.sin(theta), center[1] - ring[1] * np.cos(theta), 0.0),
                        (0.03, 0.03, np.inf))
        painter.paint(rib & (t > rng.uniform(-0.3, 0.4)), Tissue.BONE)
    return cavity


def _thorax_and_bowel(painter: _Painter, cavity: np.ndarray) -> None:
    """Lung bases at the top, stomach, duodenum, colon and small-bowel loops (unlabeled look-alikes)."""
    points, rng = painter.points, painter.rng
    t = points[2]
    for side in (-1, 1):
        painter.paint(ellipsoid(points, (side * 0.42, 0.25, 1.2), painter.resize((0.3, 0.3, 0.6))),
                      Tissue.LUNG, cavity)
    free = cavity & (painter.tissues == Tissue.FAT)
    center = painter.jitter((0.32, -0.12, 0.45), 0.04)
    radii, wobble = painter.resize((0.22, 0.17, 0.35)), painter.wobble(0.15)
    painter.paint(ellipsoid(points, center, radii, 0.3, wobble), Tissue.BOWEL, free)  # stomach wall
    lumen = ellipsoid(points, center, tuple(r - 0.035 for r in radii), 0.3, wobble)
    painter.paint(lumen, rng.choice([Tissue.FLUID, Tissue.BOWEL]), free)
    painter.paint(lumen & (points[1] < center[1] - rng.uniform(0.0, 0.08)), Tissue.GAS, free)  # gas rises
    duodenum = bezier(painter.jitter((-0.3, -0.05, 0.05), 0.03), (-0.38, 0.15, -0.15),
                      painter.jitter((-0.1, 0.2, -0.3), 0.03), n=24)
    painter.paint(tube(points, duodenum, np.full(24, 0.05), t_stretch=2.0), Tissue.BOWEL, free)
    for side, top in ((-1, 0.1), (1, 0.3)):  # ascending and descending colon along the flanks
        colon = ellipsoid(points, painter.jitter((side * 0.58, 0.02, 0.0), 0.03), (0.09, 0.09, np.inf))
        painter.paint(colon & (t < top), Tissue.BOWEL, free)
        painter.paint(colon & (t < top) & (points[1] < -0.01), Tissue.GAS, free)
    for _ in range(rng.integers(14, 22)):  # small-bowel loops: wall plus fluid, solid or gas content
        center = (rng.uniform(-0.55, 0.55), rng.uniform(-0.45, 0.15), rng.uniform(-1.1, 0.35))
        radius = rng.uniform(0.07, 0.13)
        reach = (radius, radius * rng.uniform(0.8, 1.25), rng.uniform(0.12, 0.3))
        painter.paint(ellipsoid(points, center, reach), Tissue.BOWEL, free)
        content = rng.choice([Tissue.FLUID, Tissue.BOWEL, Tissue.GAS], p=[0.45, 0.35, 0.2])
        painter.paint(ellipsoid(points, center, tuple(r * 0.6 for r in reach)), content, free)


def _organs(painter: _Painter, cavity: np.ndarray) -> None:
    """Liver (two lobes, gallbladder), spleen, pancreas and kidneys; later ones win overlaps."""
    points, rng = painter.points, painter.rng
    liver = painter.organ((-0.42, 0.02, 0.5), (0.42, 0.52, 0.85))
    liver |= painter.organ((0.02, -0.28, 0.55), (0.32, 0.16, 0.35), angle=-0.2)
    painter.paint(liver, Tissue.LIVER, cavity)
    painter.paint(painter.organ((-0.25, -0.2, -0.05), (0.06, 0.09, 0.15), roughness=0.1), Tissue.FLUID,
                  cavity & np.isin(painter.tissues, [Tissue.LIVER, Tissue.FAT]))
    spleen = painter.organ((0.5, 0.28, 0.3), (0.19, 0.3, 0.48), angle=0.6)
    hollow = ellipsoid(points, (0.32, 0.17, 0.3), (0.08, 0.12, 0.6), angle=0.6)
    painter.paint(spleen & ~hollow, Tissue.SPLEEN, cavity)
    curve = bezier(painter.jitter((0.45, 0.22, 0.12), 0.04), painter.jitter((0.1, 0.0, 0.05), 0.04),
                   painter.jitter((-0.2, 0.1, -0.12), 0.04))
    thickness = np.linspace(0.045, 0.07, len(curve)) * rng.uniform(0.85, 1.2)
    painter.paint(tube(points, curve, thickness, t_stretch=3.0), Tissue.PANCREAS, cavity)
    for side, height in ((-1, -0.35), (1, -0.2)):
        center = painter.jitter((side * 0.38, 0.34, height), 0.03)
        radii = painter.resize((0.14, 0.19, 0.38), 0.9, 1.1)
        angle = side * 0.6 + rng.normal(0.0, 0.1)
        painter.paint(ellipsoid(points, center, radii, angle, painter.wobble(0.15)), Tissue.KIDNEY, cavity)
        sinus = (center[0] - side * 0.03, center[1] - 0.02, center[2])
        painter.paint(ellipsoid(points, sinus, tuple(r * 0.55 for r in radii), angle), Tissue.MEDULLA, cavity)
        hilum = (center[0] - side * 0.1, center[1] - 0.03, center[2])
        painter.paint(ellipsoid(points, hilum, (0.05, 0.05, 0.12)), Tissue.FAT, cavity)


def _spine_muscles_vessels(painter: _Painter) -> None:
    """Vertebra with canal, paraspinal and psoas muscles, aorta and vena cava (drawn over organs)."""
    points = painter.points
    t = points[2]
    for side in (-1, 1):
        painter.paint(ellipsoid(points, (side * 0.14, 0.53, 0.0), (0.11, 0.09, np.inf)), Tissue.MUSCLE)
        psoas = np.clip(0.03 + 0.05 * (0.3 - t), 0.0, None)
        painter.paint(ellipsoid(points, (side * 0.16, 0.33, 0.0), (psoas, psoas, np.inf)) & (t < 0.3),
                      Tissue.MUSCLE)
    painter.paint(ellipsoid(points, (0.0, 0.38, 0.0), (0.1, 0.09, np.inf)), Tissue.BONE)
    painter.paint(ellipsoid(points, (0.0, 0.38, 0.0), (0.08, 0.07, np.inf)), Tissue.MARROW)
    painter.paint(ellipsoid(points, (0.0, 0.52, 0.0), (0.065, 0.065, np.inf)), Tissue.BONE)
    painter.paint(ellipsoid(points, (0.0, 0.6, 0.0), (0.025, 0.07, np.inf)), Tissue.BONE)
    painter.paint(ellipsoid(points, (0.0, 0.52, 0.0), (0.04, 0.04, np.inf)), Tissue.FLUID)
    painter.paint(ellipsoid(points, (0.05, 0.24, 0.0), (0.05, 0.05, np.inf)), Tissue.VESSEL)
    painter.paint(ellipsoid(points, (-0.12, 0.22, 0.0), (0.06, 0.045, np.inf)), Tissue.VESSEL)
