"""Training batches: patches of the plan's size cut from prepared cases, foreground-oversampled.

As nnU-Net does, each patch comes from a case drawn at random; a share of them (foreground_oversampling)
is centred on a labelled voxel, the rest on any voxel, and moved as little as needed to lie inside the
study (the box around its body, see segmentation.body). Along an axis where the study is smaller than
the patch, the study lies at that offset inside the patch and the rest is zero-padded, which is what
the normalized background is. A 2D
plan cuts one-slice patches of the canonical axial slices. Item i of an epoch is batch i, drawn from its
own seed, so an epoch is the same whatever the number of loader workers. Differentially private training
draws its batches otherwise, from records that are one slice each (SliceDataset, segmentation.privacy).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import replace

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from segmentation.case_cache import CachedCase
from segmentation.errors import DatasetError

# Labelled voxel positions kept per case to draw foreground centres from (nnU-Net keeps 10,000 per class).
FOREGROUND_POSITIONS = 10_000


class _Case:
    """A cached case with a sample of its labelled voxel positions."""

    def __init__(self, cached: CachedCase, rng: np.random.Generator) -> None:
        self.image, self.label = np.asarray(cached.image), np.asarray(cached.label)
        self.modality = cached.modality
        foreground = np.flatnonzero(self.label)
        if foreground.size > FOREGROUND_POSITIONS:
            foreground = rng.choice(foreground, FOREGROUND_POSITIONS, replace=False)
        self.foreground = foreground

    @property
    def voxels(self) -> int:
        return int(self.image.size)


class PatchDataset(Dataset):
    """An epoch's batches as (images (B, 1, *patch) float32, labels (B, 1, *patch) uint8, modalities).

    An epoch holds about as many patches as it takes to cover every case once: its voxels over the
    patch's (every slice of every case once for a 2D plan whose patch covers a whole slice).
    """

    def __init__(
        self, cases: Sequence[CachedCase], patch_size: tuple[int, ...], batch_size: int,
        foreground_oversampling: float, seed: int = 0,
    ) -> None:
        if not cases:
            raise DatasetError("there are no labelled training cases to train on")
        self.spatial_dims = len(patch_size)
        self.patch = tuple(patch_size) if self.spatial_dims == 3 else (1, *patch_size)
        rng = np.random.default_rng(seed)
        self.cases = [_Case(case, rng) for case in cases]
        self.batch_size = batch_size
        self.foreground_oversampling = foreground_oversampling
        self.samples_per_epoch = sum(_patches_per_epoch(case.image.shape, self.patch, self.spatial_dims)
                                     for case in self.cases)
        self.epoch_seed = seed

    def set_epoch_seed(self, seed: int) -> None:
        """The seed every batch of the coming epoch derives its draws from."""
        self.epoch_seed = seed

    def __len__(self) -> int:
        return math.ceil(self.samples_per_epoch / self.batch_size)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
        if not 0 <= index < len(self):
            raise IndexError(index)
        rng = np.random.default_rng([self.epoch_seed, index])
        size = min(self.batch_size, self.samples_per_epoch - index * self.batch_size)
        images, labels, modalities = [], [], []
        for _ in range(size):
            case = self.cases[int(rng.integers(len(self.cases)))]
            image, label = self._crop(case, rng)
            images.append(image)
            labels.append(label)
            modalities.append(case.modality)
        return torch.from_numpy(np.stack(images)), torch.from_numpy(np.stack(labels)), modalities

    def _crop(self, case: _Case, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        image, label = _crop(case, self.patch, self.foreground_oversampling, rng)
        # One channel: (1, z, y, x) for 3D; a 2D patch's single slice becomes its channel, (1, y, x).
        return (image[None], label[None]) if self.spatial_dims == 3 else (image, label)


class SliceDataset(Dataset):
    """Every slice of the cases as a record of its own, for differentially private training (2D plans):
    item i is a patch of slice i alone, (image (1, y, x) float32, label (1, y, x) uint8, modality), centred as
    PatchDataset centres its patches but within that slice, so a record holds one slice's data and nothing
    else. Which records make a batch is the caller's sampler's choice; `collate` stacks them, also none.
    """

    def __init__(
        self, cases: Sequence[CachedCase], patch_size: tuple[int, int], foreground_oversampling: float,
        seed: int = 0,
    ) -> None:
        if not cases:
            raise DatasetError("there are no labelled training cases to train on")
        self.patch = (1, *patch_size)
        rng = np.random.default_rng(seed)
        self.slices = [_Case(replace(case, image=case.image[z:z + 1], label=case.label[z:z + 1]), rng)
                       for case in cases for z in range(case.image.shape[0])]
        self.foreground_oversampling = foreground_oversampling
        self.epoch_seed = seed

    @property
    def samples_per_epoch(self) -> int:
        """The records an epoch takes on average: every slice once."""
        return len(self.slices)

    def set_epoch_seed(self, seed: int) -> None:
        """The seed every patch of the coming epoch derives its position from."""
        self.epoch_seed = seed

    def __len__(self) -> int:
        return len(self.slices)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor, str]:
        case = self.slices[index]
        image, label = _crop(case, self.patch, self.foreground_oversampling,
                             np.random.default_rng([self.epoch_seed, index]))
        return torch.from_numpy(image), torch.from_numpy(label), case.modality

    def collate(self, items: Sequence[tuple[torch.Tensor, torch.Tensor, str]]
                ) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
        """A batch as PatchDataset gives one; Poisson sampling may draw an empty one."""
        if not items:
            return torch.zeros((0, *self.patch)), torch.zeros((0, *self.patch), dtype=torch.uint8), []
        images, labels, modalities = zip(*items, strict=True)
        return torch.stack(images), torch.stack(labels), list(modalities)


def _crop(case: _Case, patch: tuple[int, ...], foreground_oversampling: float, rng: np.random.Generator
          ) -> tuple[np.ndarray, np.ndarray]:
    """A (z, y, x) patch of the case: centred on a labelled voxel with probability foreground_oversampling
    (when it has any), else on any voxel, and moved as little as needed to lie inside the case."""
    forced = case.foreground.size > 0 and rng.random() < foreground_oversampling
    flat = case.foreground[rng.integers(case.foreground.size)] if forced else rng.integers(case.voxels)
    start = np.asarray(np.unravel_index(int(flat), case.image.shape)) - np.asarray(patch) // 2
    room = np.asarray(case.image.shape) - np.asarray(patch)  # < 0 where the study is smaller
    start = np.clip(start, np.minimum(room, 0), np.maximum(room, 0))
    return _cut(case.image, start, patch, np.float32), _cut(case.label, start, patch, np.uint8)


def _patches_per_epoch(shape: tuple[int, ...], patch: tuple[int, ...], spatial_dims: int) -> int:
    """A study's share of an epoch: its voxels over the patch's, at least one; per slice for 2D plans,
    so every slice counts once when a patch covers a slice."""
    if spatial_dims == 2:
        return shape[0] * max(1, round(shape[1] * shape[2] / (patch[1] * patch[2])))
    return max(1, round(math.prod(shape) / math.prod(patch)))


def _cut(array: np.ndarray, start: np.ndarray, size: tuple[int, ...], dtype: type) -> np.ndarray:
    """The region of `size` from `start`, zero where it reaches past the array (as nnU-Net's loader pads)."""
    low = np.maximum(start, 0)
    high = np.minimum(start + np.asarray(size), array.shape)
    inside = np.array(array[tuple(slice(a, b) for a, b in zip(low, high, strict=True))], dtype=dtype)
    if inside.shape == tuple(size):  # the usual patch: already a copy of the right size
        return inside
    before = low - start
    after = np.asarray(size) - before - inside.shape
    return np.pad(inside, list(zip(before, after, strict=True)))


def make_loader(dataset: PatchDataset, num_workers: int = 0, pin_memory: bool = False) -> DataLoader:
    """A DataLoader over whole batches (the dataset draws them itself, so no sampler or collation); its
    own generator keeps torch's global random state untouched."""
    return DataLoader(dataset, batch_size=None, shuffle=False, num_workers=num_workers, pin_memory=pin_memory,
                      generator=torch.Generator().manual_seed(dataset.epoch_seed))
