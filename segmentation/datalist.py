"""The dataset index: every dataset folder the project accepts is a Medical Segmentation Decathlon
style folder, a dataset.json next to the image and label files it lists.

The MSD fields (name, description, modality {"0": "CT"}, labels {"0": "background", ...},
numTraining, numTest, training [{image, label}], test) keep the folder readable by MONAI's
load_decathlon_datalist; a "fedseg" block adds what MSD cannot say, the MR sequence ("mr-t1").

An image may be a DICOM series folder; when the folder holds several series, the case names one by
its "series_uid" ({"image": "dicom/ct1", "series_uid": "1.2.840...", "label": "labels/ct1.dcm"}). A
label may be NIfTI, NRRD, a Slicer .seg.nrrd or a DICOM-SEG of the image's series.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from segmentation.atomic import write_text_atomic
from segmentation.errors import DatasetError
from segmentation.volume import normalize_modality

DATASET_JSON = "dataset.json"

# The project's modality tags as MSD writes them; normalize_modality maps each back.
_MSD_MODALITY = {"ct": "CT", "mr": "MRI", "mr-t1": "T1", "mr-t2": "T2", "unknown": "unknown"}
_IMAGE_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd", ".dcm")
# A DICOM UID: dot-separated numbers, at most 64 characters.
_UID = re.compile(r"[0-9]+(\.[0-9]+)*")
_MAX_UID_LENGTH = 64


@dataclass(frozen=True)
class CaseEntry:
    """One image, its label map (None for an unlabeled test image), the modality and a case id.

    `series_uid` names the series to read when `image` is a DICOM folder holding several.
    """

    image: Path
    label: Path | None
    modality: str
    case_id: str
    series_uid: str | None = None


@dataclass(frozen=True)
class DatasetIndex:
    """A validated dataset folder: absolute paths of existing files, labels keyed by int value."""

    root: Path
    name: str
    modality: str
    labels: dict[int, str]
    training: tuple[CaseEntry, ...]
    test: tuple[CaseEntry, ...]

    @property
    def foreground_labels(self) -> dict[int, str]:
        return {value: name for value, name in self.labels.items() if value != 0}


def case_id_of(path: str | Path) -> str:
    """The file name without its image suffix: 'imagesTr/liver_003.nii.gz' -> 'liver_003'."""
    name = Path(path).name
    for suffix in _IMAGE_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return Path(name).stem


def load_dataset(root: str | Path) -> DatasetIndex:
    """Read and validate root/dataset.json; every problem is a DatasetError naming the key or file."""
    root = Path(root).expanduser().resolve()
    if not root.is_dir():
        raise DatasetError(f"dataset folder {root} does not exist or is not a folder")
    path = root / DATASET_JSON
    if not path.is_file():
        raise DatasetError(f"{root} has no {DATASET_JSON}; a dataset folder needs one (see docs/datasets.md)")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as error:
        raise DatasetError(f"cannot read {path}: {error}") from error
    except json.JSONDecodeError as error:
        raise DatasetError(f"{path} is not valid JSON: {error.msg} at line {error.lineno}") from error
    if not isinstance(data, dict):
        raise DatasetError(f"{path} must hold a JSON object, not {type(data).__name__}")
    for key in ("labels", "training"):
        if key not in data:
            raise DatasetError(f"{path} lacks the required key '{key}'")
    modality = _modality(data, path)
    training = _entries(data["training"], "training", root, modality, path, label_required=True)
    test = _entries(data.get("test", []), "test", root, modality, path, label_required=False)
    for key, entries in (("numTraining", training), ("numTest", test)):
        if key in data and data[key] != len(entries):
            raise DatasetError(f"{path}: '{key}' says {data[key]} but the list holds {len(entries)} cases")
    return DatasetIndex(
        root=root,
        name=str(data.get("name") or root.name),
        modality=modality,
        labels=_labels(data["labels"], path),
        training=training,
        test=test,
    )


def _modality(data: dict[str, Any], path: Path) -> str:
    """The fine tag from the fedseg block, else MSD's single-channel modality mapped to a tag."""
    fedseg = data.get("fedseg", {})
    if isinstance(fedseg, dict) and "modality" in fedseg:
        return normalize_modality(str(fedseg["modality"]))
    channels = data.get("modality", {})
    if not isinstance(channels, dict):
        raise DatasetError(f"{path}: 'modality' must map channel numbers to names, like {{\"0\": \"CT\"}}")
    if len(channels) > 1:
        raise DatasetError(f"{path}: 'modality' lists {len(channels)} image channels; FedSeg trains on one")
    return normalize_modality(str(next(iter(channels.values()), "")))


def _labels(labels: Any, path: Path) -> dict[int, str]:
    if not isinstance(labels, dict) or not labels:
        raise DatasetError(f"{path}: 'labels' must map label values to names, like {{\"0\": \"background\"}}")
    parsed = {}
    for key, name in labels.items():
        try:
            value = int(key)
        except ValueError:
            raise DatasetError(f"{path}: label key {key!r} is not an integer label value") from None
        if value < 0 or value > 255:
            raise DatasetError(f"{path}: label value {value} is outside 0..255")
        parsed[value] = str(name)
    if 0 not in parsed:
        raise DatasetError(f"{path}: 'labels' needs \"0\" (background)")
    if len(parsed) < 2:
        raise DatasetError(f"{path}: 'labels' names no foreground label")
    return dict(sorted(parsed.items()))


def _entries(
    items: Any, key: str, root: Path, modality: str, path: Path, label_required: bool
) -> tuple[CaseEntry, ...]:
    if not isinstance(items, list):
        raise DatasetError(f"{path}: '{key}' must be a list of cases")
    entries = []
    for number, item in enumerate(items):
        where = f"{key}[{number}]"
        if isinstance(item, str):  # MSD lists unlabeled test images as bare paths
            item = {"image": item}
        if not isinstance(item, dict) or "image" not in item:
            raise DatasetError(f"{path}: {where} must be an object with an 'image' path")
        if label_required and not item.get("label"):
            raise DatasetError(f"{path}: {where} has no 'label' path; training cases need one")
        image = _existing(item["image"], f"{where}.image", root, path)
        label = _existing(item["label"], f"{where}.label", root, path) if item.get("label") else None
        series_uid = _series_uid(item.get("series_uid"), where, image, path)
        entries.append(CaseEntry(image=image, label=label, modality=modality, case_id=case_id_of(image),
                                 series_uid=series_uid))
    return tuple(entries)


def _series_uid(value: Any, where: str, image: Path, path: Path) -> str | None:
    """A case's series UID (None when absent), which only a DICOM folder's image can have; whether the
    folder holds that series is found when the case is read."""
    if value is None:
        return None
    if not isinstance(value, str) or not _UID.fullmatch(value) or len(value) > _MAX_UID_LENGTH:
        raise DatasetError(f"{path}: {where}.series_uid must be a DICOM UID (digits and dots, at most "
                           f"{_MAX_UID_LENGTH} characters), not {value!r}")
    if not image.is_dir():
        raise DatasetError(f"{path}: {where}.series_uid names a series, but its image {image.name} is a "
                           "file, not a DICOM folder")
    return value


def _existing(value: Any, where: str, root: Path, path: Path) -> Path:
    if not isinstance(value, str) or not value:
        raise DatasetError(f"{path}: {where} must be a file path")
    file = (root / value).resolve()
    if not file.exists():
        raise DatasetError(f"{path}: {where} names {value}, which does not exist")
    return file


def write_dataset_json(
    root: str | Path,
    *,
    name: str,
    modality: str,
    labels: dict[int, str],
    training: Sequence[tuple[str, str] | tuple[str, str, str | None]],
    test: Sequence[tuple[str, str | None] | tuple[str, str | None, str | None]],
    description: str = "",
) -> Path:
    """Write root/dataset.json (atomically) for files given relative to root; returns its path.

    Each case is (image, label) or (image, label, series_uid), the UID naming one series of a DICOM
    folder that holds several (None: the folder's only series).
    """
    tag = normalize_modality(modality)
    data = {
        "name": name,
        "description": description,
        "tensorImageSize": "3D",
        "modality": {"0": _MSD_MODALITY[tag]},
        "labels": {str(value): label for value, label in sorted(labels.items())},
        "numTraining": len(training),
        "numTest": len(test),
        "training": [_entry(*case) for case in training],
        "test": [_entry(*case) for case in test],
        "fedseg": {"modality": tag},
    }
    return write_text_atomic(Path(root) / DATASET_JSON, json.dumps(data, indent=2) + "\n")


def _entry(image: str, label: str | None, series_uid: str | None = None) -> dict[str, str]:
    """One case as dataset.json holds it; keys without a value are left out."""
    entry = {"image": image, "label": label, "series_uid": series_uid}
    return {key: value for key, value in entry.items() if value}
