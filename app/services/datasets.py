"""Build and check a site's dataset folder: read an MSD folder, pair loose files, check each pair,
write dataset.json (files stay where they are; paths are relative to the folder when possible).

Saving never loses a file: a dataset.json about to be replaced is set aside first (and put back if
writing fails), and `replacing_needs_asking` says when the file belongs to another dataset.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from app.models.dataset import TRAINING, VALIDATION, CaseCheck, CaseRow, DatasetDraft
from segmentation.atomic import set_aside
from segmentation.errors import DatasetError, FedSegError

if TYPE_CHECKING:
    from app.models.viewer import ViewerModel


@dataclass(frozen=True)
class SavedDataset:
    """Where dataset.json went and where the file it replaced is kept (None when there was none)."""

    path: Path
    backup: Path | None

    def describe(self) -> str:
        kept = f"; the previous one is kept as {self.backup}" if self.backup else ""
        return f"Wrote {self.path}{kept}"


def read_dataset_folder(root: Path) -> tuple[str, str, dict[int, str], list[CaseRow]]:
    """(name, modality, labels, rows) of an MSD folder; the labelled test split is the validation."""
    from segmentation.datalist import load_dataset

    index = load_dataset(root)
    rows = [CaseRow(case.image, case.label, split, series_uid=case.series_uid)
            for split, cases in ((TRAINING, index.training), (VALIDATION, index.test)) for case in cases]
    return index.name, index.modality, index.labels, rows


def pair_by_case(images: list[Path], labels: list[Path]) -> list[tuple[Path, Path | None]]:
    """Each image with the label file of the same case id (file name without suffix), else None."""
    from segmentation.datalist import case_id_of

    by_case = {case_id_of(label): label for label in labels}
    return [(image, by_case.get(case_id_of(image))) for image in images]


def series_row(folder: Path, series_uids: list[str], chosen: str | None, label: Path | None) -> CaseRow:
    """The case of one series of a DICOM folder; its UID is kept only when the folder holds several."""
    if len(series_uids) <= 1:
        return CaseRow(folder, label)
    if chosen not in series_uids:
        raise DatasetError(f"{folder} holds {len(series_uids)} series; choose one of them")
    return CaseRow(folder, label, series_uid=chosen)


def open_study_case(viewer: ViewerModel) -> tuple[Path, Path | None, str | None]:
    """The viewer's study as (image file or DICOM folder, the label file its overlay was read from,
    its series UID); an overlay read from no file (a prediction) is left out."""
    study = viewer.study
    if study is None:
        raise DatasetError("no study is open in the viewer; open one there first")
    return study.source, viewer.label_path, study.series_uid if study.source.is_dir() else None


def check_case(
    image: Path, label: Path | None, labels: dict[int, str] | None, series_uid: str | None = None
) -> CaseCheck:
    """Read a pair and say what is wrong with it, if anything (never raises for bad files). With
    `labels` None (a new dataset that takes its labels from its files) no label value is a problem."""
    from segmentation.io import read_labeled_pair, read_volume

    try:
        if label is None:
            volume = read_volume(image, series_uid)
            return CaseCheck("no label file: a training case needs one", _size(volume), volume.spacing,
                             modality=volume.modality)
        volume, label_volume = read_labeled_pair(image, label, series_uid=series_uid)
    except FedSegError as error:
        return CaseCheck(str(error))
    except OSError as error:
        return CaseCheck(f"{image.name} cannot be read: {error.strerror}")
    counts = np.bincount(np.asarray(label_volume.array).ravel().astype(np.int64))
    voxels = {int(value): int(counts[value]) for value in np.flatnonzero(counts)}
    unknown = sorted(set(voxels) - set(labels)) if labels is not None else []
    problem = f"label values {unknown} are not in the dataset's labels" if unknown else ""
    names = {value: label_volume.labels.get(value, f"label {value}") for value in voxels if value}
    return CaseCheck(problem, _size(volume), tuple(float(v) for v in volume.spacing), voxels, volume.modality,
                     names)


def replacing_needs_asking(draft: DatasetDraft, root: Path) -> bool:
    """Whether saving into `root` would replace a dataset.json that is not the one the draft was
    opened from or last saved to."""
    from segmentation.datalist import DATASET_JSON

    existing = root / DATASET_JSON
    if not existing.exists():
        return False
    if draft.root is None:
        return True
    try:
        return not os.path.samefile(draft.root / DATASET_JSON, existing)
    except OSError:  # the draft's own file is gone, so this one is another's
        return True


def save_dataset(draft: DatasetDraft, root: Path) -> SavedDataset:
    """Write root/dataset.json for the draft's rows, keeping a file it replaces beside it under a new
    name; the draft then belongs to `root` and has no unsaved changes."""
    from segmentation.datalist import DATASET_JSON, write_dataset_json

    if not draft.rows:
        raise DatasetError("the dataset has no cases; add image and label pairs first")
    if set(draft.labels) <= {0}:
        raise DatasetError("the dataset names no label besides the background, so nothing could be trained; "
                           "start from a dataset folder whose dataset.json names its labels")
    missing = [row.image.name for row in draft.rows if row.split == TRAINING and row.label is None]
    if missing:
        raise DatasetError(f"training cases need a label file; {', '.join(missing[:3])} have none")
    root.mkdir(parents=True, exist_ok=True)
    cases = {split: [(_relative(row.image, root), _relative(row.label, root) if row.label else None,
                      row.series_uid) for row in draft.rows if row.split == split]
             for split in (TRAINING, VALIDATION)}
    target = root / DATASET_JSON
    backup = set_aside(target, "backup") if target.exists() else None
    try:
        written = write_dataset_json(root, name=draft.name, modality=draft.modality, labels=draft.labels,
                                     training=cases[TRAINING], test=cases[VALIDATION],
                                     description="Built with the FedSeg Workbench")
    except BaseException:
        if backup is not None:
            os.replace(backup, target)
        raise
    draft.mark_saved(root)
    return SavedDataset(written, backup)


def start_folder(draft_root: Path | None, recent_datasets: list[str], workspace: Path) -> Path:
    """Where a file dialog opens: the draft's folder, else the last dataset folder that still exists,
    else the workspace, else the home folder (never the process's working folder)."""
    candidates = [draft_root, *(Path(path) for path in recent_datasets), workspace]
    return next((path for path in candidates if path is not None and path.is_absolute() and path.is_dir()),
                Path.home())


def _relative(path: Path, root: Path) -> str:
    """'./images/x.nii.gz' inside the folder, an absolute path elsewhere."""
    try:
        return "./" + path.resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        return os.fspath(path.resolve())


def _size(volume) -> tuple[int, int, int]:
    return tuple(reversed(volume.shape))  # type: ignore[return-value]
