"""Prepare each training study once, keep the result on disk, and serve it memory-mapped.

A labelled case becomes a PreparedStudy (canonical grid, target spacing, the box around the body,
normalized; see segmentation.preprocessing). The arrays are saved as .npy files named by a hash of the
source files (every file's path, size and modification time, the files of a DICOM series folder
included, and the series chosen in it) and of every plan setting that shaped them, so a later epoch,
run or round loads them without reading or resampling anything, and an edited file or changed plan is
never served stale. Torch-free.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import platformdirs

from segmentation.atomic import atomic_open
from segmentation.datalist import CaseEntry
from segmentation.errors import DatasetError
from segmentation.io import read_labeled_pair
from segmentation.plan import Plan
from segmentation.preprocessing import prepare_study

# Bump when the stored layout or the preprocessing code changes meaning: old entries are then ignored.
CACHE_FORMAT = 3
CACHE_DIR_ENVIRONMENT = "FEDSEG_CACHE_DIR"


def default_cache_dir() -> Path:
    """$FEDSEG_CACHE_DIR, else the user's cache folder (never the dataset folder, which may be read-only)."""
    configured = os.environ.get(CACHE_DIR_ENVIRONMENT)
    if configured:
        return Path(configured)
    return Path(platformdirs.user_cache_dir("fedseg-workbench")) / "studies"


@dataclass(frozen=True)
class CachedCase:
    """One case's body box on the canonical grid: image (z, y, x) float32 and label uint8, memory-mapped."""

    case_id: str
    modality: str
    image: np.ndarray
    label: np.ndarray


class CaseCache:
    """Prepared labelled cases in a folder; `hits`/`misses` count loads served/built."""

    def __init__(self, root: str | Path, plan: Plan) -> None:
        self.root = Path(root)
        self.plan = plan
        self.hits = 0
        self.misses = 0

    def key(self, case: CaseEntry) -> str:
        """Hash of the source files' identity and every plan setting that shapes the arrays (not the
        patch size: patches are cut when batches are drawn)."""
        if case.label is None:
            raise DatasetError(f"case {case.case_id} has no label map and cannot be used for training")
        plan = self.plan.to_dict()
        identity = {
            "format": CACHE_FORMAT, "modality": case.modality,
            "sources": [_source_identity(case, case.image), _source_identity(case, case.label)],
            "plan": {name: plan[name] for name in ("spatial_dims", "target_spacing", "lower_percentile",
                                                   "upper_percentile", "modality_statistics")},
        }
        if case.series_uid is not None:  # one series of several in a folder; absent, earlier keys stay valid
            identity["series_uid"] = case.series_uid
        return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:32]

    def load(self, case: CaseEntry) -> CachedCase:
        """The case's arrays, from the cache when present, else prepared now and stored."""
        key = self.key(case)
        image_path, label_path = self.root / f"{key}-image.npy", self.root / f"{key}-label.npy"
        if image_path.is_file() and label_path.is_file():
            self.hits += 1
        else:
            self.misses += 1
            image, label = self._prepare(case)
            self.root.mkdir(parents=True, exist_ok=True)
            _save_atomically(label, label_path)
            _save_atomically(image, image_path)  # written last: its presence marks a complete entry
        return CachedCase(case.case_id, case.modality, np.load(image_path, mmap_mode="r"),
                          np.load(label_path, mmap_mode="r"))

    def _prepare(self, case: CaseEntry) -> tuple[np.ndarray, np.ndarray]:
        image, label = read_labeled_pair(case.image, case.label, series_uid=case.series_uid)
        if label.array.min() < 0 or label.array.max() > np.iinfo(np.uint8).max:
            raise DatasetError(f"case {case.case_id}: label values must lie in 0..255 ({case.label})")
        image = replace(image, modality=case.modality)
        prepared = prepare_study(image, self.plan, label, name=f"case {case.case_id} ({case.image})")
        return prepared.image, prepared.label


def _source_identity(case: CaseEntry, path: Path) -> list:
    """[path, size, mtime] of a file, or of every file under a folder (a DICOM series)."""
    path = Path(path).resolve()
    try:
        if path.is_dir():
            files = sorted(p for p in path.rglob("*") if p.is_file())
            stats = [(str(p.relative_to(path)), p.stat()) for p in files]
            return [str(path), [[name, stat.st_size, stat.st_mtime_ns] for name, stat in stats]]
        stat = path.stat()
    except OSError:
        raise DatasetError(f"case {case.case_id}: {path} does not exist or cannot be read") from None
    return [str(path), stat.st_size, stat.st_mtime_ns]


def _save_atomically(array: np.ndarray, path: Path) -> None:
    with atomic_open(path, "wb") as stream:
        np.save(stream, np.ascontiguousarray(array))
