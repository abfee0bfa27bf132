"""The demo's data: one phantom dataset per site, made once and reused while its settings stay the same.

Each site gets its own anatomy seed (independent patients), renders them in its own modality and stores
them as its scanner would (orientation, spacing, field of view, NIfTI or DICOM: settings.SITE_STORAGE);
the last `test_cases` of a site are its held-out test split, which the site also scores the global model
on during the run.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from federation.demo.settings import DemoSettings
from segmentation.datalist import DatasetIndex, load_dataset
from segmentation.errors import FedSegError
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
    return PhantomGeometry(str(geometry["orientation"]), tuple(geometry["spacing"]),
                           float(geometry["field_of_view_mm"]), str(geometry["file_format"]))


def site_dataset(folder: Path, spec: dict[str, object]) -> DatasetIndex:
    """The site's dataset in `folder`: reused when it was made with `spec`, else made afresh (its old
    cases go: generate_dataset's overwrite empties the case folders)."""
    marker = folder / MARKER_NAME
    if marker.is_file():
        try:
            if json.loads(marker.read_text(encoding="utf-8")) == spec:
                return load_dataset(folder)
        except (json.JSONDecodeError, FedSegError):
            pass  # unreadable or damaged: make it again
    cases = int(spec["train_cases"]) + int(spec["test_cases"])
    dataset = generate_dataset(
        folder, str(spec["modality"]), cases, int(spec["seed"]), size=int(spec["size"]),
        test_fraction=int(spec["test_cases"]) / cases, overwrite=True, geometry=spec_geometry(spec),
    )
    marker.write_text(json.dumps(spec), encoding="utf-8")
    return dataset


def demo_datasets(root: Path, settings: DemoSettings) -> dict[str, DatasetIndex]:
    """Every site's dataset by site name, under root/<modality>."""
    return {settings.site_name(modality): site_dataset(root / modality, site_data_spec(settings, modality))
            for modality in settings.sites}
