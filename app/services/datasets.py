"""Build and check a site's dataset folder: read an MSD folder, pair loose files, check each pair,
write dataset.json (files stay where they are; paths are relative to the folder when possible)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from app.models.dataset import TRAINING, VALIDATION, CaseCheck, CaseRow, DatasetDraft
from segmentation.errors import DatasetError, FedSegError


def read_dataset_folder(root: Path) -> tuple[str, str, dict[int, str], list[CaseRow]]:
    """(name, modality, labels, rows) of an MSD folder; the labelled test split is the validation."""
    from segmentation.datalist import load_dataset

    index = load_dataset(root)
    rows = [CaseRow(case.image, case.label, TRAINING) for case in index.training]
    rows += [CaseRow(case.image, case.label, VALIDATION) for case in index.test]
    return index.name, index.modality, index.labels, rows


def pair_by_case(images: list[Path], labels: list[Path]) -> list[tuple[Path, Path | None]]:
    """Each image with the label file of the same case id (file name without suffix), else None."""
    from segmentation.datalist import case_id_of

    by_case = {case_id_of(label): label for label in labels}
    return [(image, by_case.get(case_id_of(image))) for image in images]


def check_case(image: Path, label: Path | None, labels: dict[int, str]) -> CaseCheck:
    """Read a pair and say what is wrong with it, if anything (never raises for bad files)."""
    from segmentation.io import read_labeled_pair, read_volume

    try:
        if label is None:
            volume = read_volume(image)
            return CaseCheck("no label file: a training case needs one", _size(volume), volume.spacing)
        volume, label_volume = read_labeled_pair(image, label)
    except FedSegError as error:
        return CaseCheck(str(error))
    except OSError as error:
        return CaseCheck(f"{image.name} cannot be read: {error.strerror}")
    counts = np.bincount(np.asarray(label_volume.array).ravel().astype(np.int64))
    voxels = {int(value): int(counts[value]) for value in np.flatnonzero(counts)}
    unknown = sorted(set(voxels) - set(labels))
    problem = f"label values {unknown} are not in the dataset's labels" if unknown else ""
    return CaseCheck(problem, _size(volume), tuple(float(v) for v in volume.spacing), voxels)


def save_dataset(draft: DatasetDraft, root: Path) -> Path:
    """Write root/dataset.json for the draft's rows; returns its path."""
    from segmentation.datalist import write_dataset_json

    if not draft.rows:
        raise DatasetError("the dataset has no cases; add image and label pairs first")
    missing = [row.image.name for row in draft.rows if row.split == TRAINING and row.label is None]
    if missing:
        raise DatasetError(f"training cases need a label file; {', '.join(missing[:3])} have none")
    root.mkdir(parents=True, exist_ok=True)
    pairs = {split: [(_relative(row.image, root), _relative(row.label, root) if row.label else None)
                     for row in draft.rows if row.split == split] for split in (TRAINING, VALIDATION)}
    return write_dataset_json(root, name=draft.name, modality=draft.modality, labels=draft.labels,
                              training=pairs[TRAINING], test=pairs[VALIDATION],
                              description="Built with the FedSeg Workbench")


def _relative(path: Path, root: Path) -> str:
    """'./images/x.nii.gz' inside the folder, an absolute path elsewhere."""
    try:
        return "./" + path.resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        return os.fspath(path.resolve())


def _size(volume) -> tuple[int, int, int]:
    return tuple(reversed(volume.shape))  # type: ignore[return-value]
