"""Tiny labelled site datasets and a server.toml for the federation tests.

The task is trivially learnable (a bright disk on noise is label 1), so an (8, 16) U-Net on 16x16
slices trains in well under a second per epoch and a round visibly changes the weights.
"""

from pathlib import Path

import numpy as np
import SimpleITK as sitk

from segmentation.datalist import write_dataset_json
from segmentation.plan import Plan

LABELS = {0: "background", 1: "disk"}
# What the plan rules make of these sites: their own 1 x 1 x 2 mm grid, whole 16 x 16 slices as patches.
PLAN = Plan(labels=LABELS, spatial_dims=2, target_spacing=(1.0, 1.0, 2.0), patch_size=(16, 16))


def _disk_case(rng: np.random.Generator, depth: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    y, x = np.mgrid[:size, :size]
    label = np.zeros((depth, size, size), np.uint8)
    for z in range(depth):
        cy, cx = rng.uniform(0.35, 0.65, 2) * size
        radius = rng.uniform(0.15, 0.25) * size
        label[z] = (y - cy) ** 2 + (x - cx) ** 2 <= radius**2
    image = 100.0 * label + rng.normal(0.0, 10.0, label.shape)
    return image.astype(np.float32), label


def write_disk_site(root: Path, training: int = 2, test: int = 1, seed: int = 0, size: int = 16,
                    depth: int = 3, labels: dict[int, str] = LABELS,
                    spacing: tuple[float, float, float] = (1.0, 1.0, 2.0)) -> Path:
    """An MSD-style dataset folder of NIfTI disk phantoms (`spacing` in mm, x y z) with a labelled test
    split."""
    rng = np.random.default_rng(seed)
    pairs: dict[str, list[tuple[str, str]]] = {"training": [], "test": []}
    for split, count in (("training", training), ("test", test)):
        for index in range(count):
            image, label = _disk_case(rng, depth, size)
            name = f"disk_{split}_{index:02d}.nii.gz"
            for folder, array in (("images", image), ("labels", label)):
                volume = sitk.GetImageFromArray(array)
                volume.SetSpacing(spacing)
                (root / folder).mkdir(parents=True, exist_ok=True)
                sitk.WriteImage(volume, str(root / folder / name))
            pairs[split].append((f"images/{name}", f"labels/{name}"))
    write_dataset_json(root, name="disks", modality="ct", labels=labels, training=pairs["training"],
                       test=pairs["test"])
    return root


def server_toml(
    run_dir: str | Path, rounds: int = 2, min_sites: int = 2, extra: str = "", model: str = ""
) -> str:
    """A server.toml for the tiny model: 2 levels of (8, 16) channels, no augmentation; the plan comes from
    the sites (16 x 16 slices for write_disk_site's). `extra` goes into [server], `model` into [model]."""
    return f"""
[server]
host = "127.0.0.1"
run_dir = "{run_dir}"
{extra}
[federation]
rounds = {rounds}
min_sites = {min_sites}
round_timeout = 60
augmentation = "none"

[model]
labels = ["background", "disk"]
channels = [8, 16]
batch_size = 4
{model}"""
