"""Preprocess each training volume once, keep the result on disk, and serve it as batches.

A volume becomes network samples (2D slices, or one resized whole volume for 3D networks) through
segmentation.preprocessing. The samples are saved as memory-mappable .npy files named by a hash of
the source files (path, size, mtime) and every setting that shaped them, so a later epoch, run or
round loads them without re-reading or re-normalizing anything, and an edited file or changed
setting can never be served stale.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import platformdirs
import torch
from torch.utils.data import BatchSampler, DataLoader, Dataset, RandomSampler, SequentialSampler

from segmentation.atomic import atomic_open
from segmentation.datalist import CaseEntry
from segmentation.errors import DatasetError
from segmentation.io import read_labeled_pair
from segmentation.preprocessing import Preprocessing, network_input, network_target

# Bump when the stored layout or the preprocessing code changes meaning: old entries are then ignored.
CACHE_FORMAT = 1
CACHE_DIR_ENVIRONMENT = "FEDSEG_CACHE_DIR"


def default_cache_dir() -> Path:
    """$FEDSEG_CACHE_DIR, else the user's cache folder (never the dataset folder, which may be read-only)."""
    configured = os.environ.get(CACHE_DIR_ENVIRONMENT)
    if configured:
        return Path(configured)
    return Path(platformdirs.user_cache_dir("fedseg-workbench")) / "slices"


@dataclass(frozen=True)
class CachedCase:
    """One case's samples: images (n, 1, *size) float32 and labels (n, 1, *size) uint8, memory-mapped."""

    case_id: str
    modality: str
    images: np.ndarray
    labels: np.ndarray


class SliceCache:
    """Preprocessed samples of labelled cases in a folder; `hits`/`misses` count loads served/built."""

    def __init__(self, root: str | Path, preprocessing: Preprocessing, spatial_dims: int = 2) -> None:
        self.root = Path(root)
        self.preprocessing = preprocessing
        self.spatial_dims = spatial_dims
        self.hits = 0
        self.misses = 0

    def key(self, case: CaseEntry) -> str:
        """Hash of the source files' identity and every setting that shapes the samples."""
        if case.label is None:
            raise DatasetError(f"case {case.case_id} has no label map and cannot be used for training")
        sources = []
        for path in (case.image, case.label):
            path = Path(path).resolve()
            try:
                stat = path.stat()
            except OSError:
                raise DatasetError(f"case {case.case_id}: {path} does not exist or cannot be read") from None
            sources.append([str(path), stat.st_size, stat.st_mtime_ns])
        identity = {
            "format": CACHE_FORMAT, "sources": sources, "modality": case.modality,
            "preprocessing": self.preprocessing.to_dict(), "spatial_dims": self.spatial_dims,
        }
        return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:32]

    def load(self, case: CaseEntry) -> CachedCase:
        """The case's samples, from the cache when present, else preprocessed now and stored."""
        key = self.key(case)
        image_path, label_path = self.root / f"{key}-image.npy", self.root / f"{key}-label.npy"
        if image_path.is_file() and label_path.is_file():
            self.hits += 1
        else:
            self.misses += 1
            images, labels = self._preprocess(case)
            self.root.mkdir(parents=True, exist_ok=True)
            _save_atomically(labels, label_path)
            _save_atomically(images, image_path)  # written last: its presence marks a complete entry
        return CachedCase(
            case_id=case.case_id, modality=case.modality,
            images=np.load(image_path, mmap_mode="r"), labels=np.load(label_path, mmap_mode="r"),
        )

    def _preprocess(self, case: CaseEntry) -> tuple[np.ndarray, np.ndarray]:
        image, label = read_labeled_pair(case.image, case.label)
        if label.array.min() < 0 or label.array.max() > np.iinfo(np.uint8).max:
            raise DatasetError(f"case {case.case_id}: label values must lie in 0..255 ({case.label})")
        images = network_input(image.array, self.preprocessing, self.spatial_dims, case.modality)
        labels = network_target(label.array, self.preprocessing, self.spatial_dims)
        return images.numpy().astype(np.float32, copy=False), labels.numpy().astype(np.uint8)


def _save_atomically(array: np.ndarray, path: Path) -> None:
    with atomic_open(path, "wb") as stream:
        np.save(stream, np.ascontiguousarray(array))


class SliceDataset(Dataset):
    """Samples of many cases as (image (1, *size) float32, label (1, *size) uint8, modality).

    The samples sit in one contiguous tensor (a 96x96 float32 slice is 36 KB, so even large datasets
    fit), which lets a whole batch be gathered with a single indexing operation: index with a list
    of positions to get a batched (images, labels, modalities) triple (see make_loader).
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, modalities: Sequence[str]) -> None:
        if not (len(images) == len(labels) == len(modalities)):
            raise ValueError("images, labels and modalities need one entry per sample")
        self.images = images.contiguous()
        self.labels = labels.contiguous()
        self.modalities = tuple(modalities)

    @classmethod
    def from_cases(
        cls, cases: Sequence[CaseEntry], cache: SliceCache, min_foreground_fraction: float = 0.0
    ) -> SliceDataset:
        """Load (or build) every case's samples; drop samples whose labelled share is below the fraction.

        Mostly-empty slices teach little but cost a full step each; 0.0 keeps every sample.
        """
        if not cases:
            raise DatasetError("there are no labelled training cases to train on")
        images, labels, modalities = [], [], []
        for case in cases:
            cached = cache.load(case)
            keep = _foreground_fraction(cached.labels) >= min_foreground_fraction
            images.append(cached.images[keep])
            labels.append(cached.labels[keep])
            modalities += [case.modality] * int(keep.sum())
        if not modalities:
            raise DatasetError(
                f"no training slice has at least {min_foreground_fraction:.0%} labelled pixels; "
                "lower the fraction"
            )
        images, labels = np.concatenate(images), np.concatenate(labels)
        return cls(torch.from_numpy(images), torch.from_numpy(labels), modalities)

    def __len__(self) -> int:
        return len(self.modalities)

    def __getitem__(self, index: int | Sequence[int]):
        if isinstance(index, (int, np.integer)):
            return self.images[index], self.labels[index], self.modalities[index]
        positions = torch.as_tensor(index, dtype=torch.long)
        return self.images[positions], self.labels[positions], [self.modalities[i] for i in index]


def _foreground_fraction(labels: np.ndarray) -> np.ndarray:
    return (labels.reshape(len(labels), -1) > 0).mean(axis=1)


def make_loader(
    dataset: SliceDataset, batch_size: int, shuffle: bool = True, generator: torch.Generator | None = None,
    num_workers: int = 0, pin_memory: bool = False,
) -> DataLoader:
    """A DataLoader that fetches each batch with one gather instead of batch_size item calls; all of
    its randomness (order, worker seeds) comes from `generator`, never from torch's global RNG."""
    order = RandomSampler(dataset, generator=generator) if shuffle else SequentialSampler(dataset)
    return DataLoader(
        dataset, sampler=BatchSampler(order, batch_size, drop_last=False), batch_size=None,
        num_workers=num_workers, pin_memory=pin_memory, generator=generator,
    )
