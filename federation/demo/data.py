"""The demo's data: one phantom dataset per site, made once and reused while its settings stay the same.

Each site gets its own anatomy seed (independent patients), renders them in its own modality and stores
them as its scanner would (orientation, spacing, field of view, NIfTI or DICOM: settings.SITE_STORAGE);
the last `test_cases` of a site are its held-out test split, which the site also scores the global model
on during the run.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from federation.demo.settings import DemoSettings
from segmentation.datalist import DATASET_JSON, DatasetIndex, load_dataset
from segmentation.errors import DatasetError, FedSegError
from segmentation.synth import PhantomGeometry, generate_dataset

MARKER_NAME = "demo-data.json"  # what a site folder was made with, so changed settings remake it


def site_data_spec(settings: DemoSettings, modality: str) -> dict[str, object]:
    """Everything that decides a site's phantoms, as it reads back from JSON (the folder's marker)."""
    return {
        "modality": modality, "seed": settings.seed * 1000 + 1 + settings.sites.index(modality),
        "train_cases": settings.train_cases, "test_cases": settings.test_cases, "size": settings.volume_size,
        "geometry": geometry_spec(settings.site_geometry(modality)),
    }


def geometry_spec(geometry: PhantomGeometry) -> dict[str, object]:
    """A site's storage as JSON values: orientation, spacing [x, y, z] in mm, field of view, file format."""
    return {"orientation": geometry.orientation, "spacing": list(geometry.spacing or ()),
            "field_of_view_mm": geometry.field_of_view_mm, "file_format": geometry.file_format}


def spec_geometry(spec: dict[str, object]) -> PhantomGeometry:
    """The geometry a site data spec names."""
    geometry: Any = spec["geometry"]
    return PhantomGeometry(str(geometry["orientation"]), tuple(geometry["spacing"]) or None,  # [] = automatic
                           float(geometry["field_of_view_mm"]), str(geometry["file_format"]))


class NotDemoFolder(DatasetError):
    """A site folder to remake holds a file the demo did not write: it is left as it is."""

    def __init__(self, folder: Path, foreign: Path) -> None:
        super().__init__(f"{folder} holds {foreign.relative_to(folder)}, which the demo did not write; "
                         "it is left as it is (choose another folder for the demo)")
        self.folder, self.foreign = folder, foreign


def site_dataset(folder: Path, spec: dict[str, object],
                 progress: Callable[[str], None] = lambda message: None) -> DatasetIndex:
    """The site's dataset in `folder`: reused when it was made with `spec`, else made afresh (its old
    cases go: generate_dataset's overwrite empties the case folders), saying so to `progress`. A folder
    holding anything the demo does not write is never remade: NotDemoFolder."""
    marker = folder / MARKER_NAME
    if marker.is_file():
        try:
            if json.loads(marker.read_text(encoding="utf-8")) == spec:
                return load_dataset(folder)
        except (json.JSONDecodeError, FedSegError):
            pass  # unreadable or damaged: make it again
    modality = str(spec["modality"])
    if (foreign := foreign_file(folder, modality)) is not None:
        raise NotDemoFolder(folder, foreign)
    cases = int(spec["train_cases"]) + int(spec["test_cases"])
    made = (folder / DATASET_JSON).is_file()
    progress(f"{'remaking' if made else 'making'} the {modality.upper()} demo site ({cases} cases)")
    dataset = generate_dataset(
        folder, str(spec["modality"]), cases, int(spec["seed"]), size=int(spec["size"]),
        test_fraction=int(spec["test_cases"]) / cases, overwrite=True, geometry=spec_geometry(spec),
    )
    marker.write_text(json.dumps(spec), encoding="utf-8")
    return dataset


def foreign_file(folder: Path, modality: str) -> Path | None:
    """The first file under a site folder that the demo does not write, if any: the demo writes
    dataset.json, its marker and segmentation.synth's cases (synth_<modality>_NNN files or DICOM folders in
    imagesTr, labelsTr, imagesTs, labelsTs); hidden files (a crashed write's temporary) do not count."""
    case = re.compile(rf"(images|labels)(Tr|Ts)/synth_{modality.replace('-', '')}_\d+(\.nii\.gz|/.+)")
    for path in sorted(folder.rglob("*")):
        relative = path.relative_to(folder).as_posix()
        if path.is_file() and not path.name.startswith(".") and relative not in (DATASET_JSON, MARKER_NAME) \
                and not case.fullmatch(relative):
            return path
    return None


def demo_datasets(root: Path, settings: DemoSettings) -> dict[str, DatasetIndex]:
    """Every site's dataset by site name, under root/<modality>."""
    return {settings.site_name(modality): site_dataset(root / modality, site_data_spec(settings, modality))
            for modality in settings.sites}
