"""The demo's data: one phantom dataset per site, made once and reused while its settings stay the same.

Each site gets its own anatomy seed (independent patients) and renders them in its own modality; the
last `test_cases` of a site are its held-out test split, which the site also scores the global model on
during the run.
"""

from __future__ import annotations

import json
from pathlib import Path

from federation.demo.settings import DemoSettings
from segmentation.datalist import DatasetIndex, load_dataset
from segmentation.errors import FedSegError
from segmentation.synth import generate_dataset

MARKER_NAME = "demo-data.json"  # what a site folder was made with, so changed settings remake it


def site_data_spec(settings: DemoSettings, modality: str) -> dict[str, object]:
    """Everything that decides a site's phantoms."""
    return {
        "modality": modality, "seed": settings.seed * 1000 + 1 + settings.sites.index(modality),
        "train_cases": settings.train_cases, "test_cases": settings.test_cases, "size": settings.volume_size,
    }


def site_dataset(folder: Path, spec: dict[str, object]) -> DatasetIndex:
    """The site's dataset in `folder`: reused when it was made with `spec`, else (re)made."""
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
        test_fraction=int(spec["test_cases"]) / cases, overwrite=True,
    )
    marker.write_text(json.dumps(spec), encoding="utf-8")
    return dataset


def demo_datasets(root: Path, settings: DemoSettings) -> dict[str, DatasetIndex]:
    """Every site's dataset by site name, under root/<modality>."""
    return {settings.site_name(modality): site_dataset(root / modality, site_data_spec(settings, modality))
            for modality in settings.sites}
