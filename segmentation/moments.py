"""Pooling intensity statistics that sites or volumes computed apart, without their voxels. Torch-free."""

from __future__ import annotations

import math


def pooled_mean_std(
    mean_a: float, std_a: float, count_a: int, mean_b: float, std_b: float, count_b: int
) -> tuple[float, float, int]:
    """Mean, population standard deviation and count of the union of two voxel sets (Chan et al.'s
    pairwise update, numerically stable)."""
    total = count_a + count_b
    delta = mean_b - mean_a
    mean = mean_a + delta * count_b / total
    sum_sq = std_a**2 * count_a + std_b**2 * count_b + delta**2 * count_a * count_b / total
    return mean, math.sqrt(sum_sq / total), total
