"""Writes phantom cases as an MSD-style dataset folder (imagesTr/labelsTr/imagesTs/labelsTs + dataset.json).

Case i of seed s has the same anatomy in every modality (its own random stream), so datasets of one
seed pair up across modalities; give each simulated site its own seed for independent patients.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
from tqdm import tqdm

from segmentation.datalist import DatasetIndex, load_dataset, write_dataset_json
from segmentation.errors import ConfigError, DatasetError
from segmentation.io import write_volume
from segmentation.io.dicom_writer import derived_uid, write_dicom_series
from segmentation.synth.anatomy import LABELS, sample_anatomy
from segmentation.synth.appearance import SYNTH_MODALITIES, modality_model, render
from segmentation.synth.scan import DEFAULT_GEOMETRY, PhantomGeometry, orient, scan_grid
from segmentation.volume import Volume

_FOLDERS = ("imagesTr", "labelsTr", "imagesTs", "labelsTs")


def phantom_depth(size: int, dim: int) -> int:
    """Slices per volume: one for 2D, size/4 (at least 8) for 3D, e.g. 24 at size 96."""
    return 1 if dim == 2 else max(8, size // 4)


def phantom_case(
    seed: int, index: int, modality: str, size: int, depth: int, geometry: PhantomGeometry = DEFAULT_GEOMETRY
) -> tuple[Volume, Volume]:
    """Case `index` of `seed` as (image, label) volumes with physical geometry in millimetres.

    (size, depth) is the reference grid (see scan.scan_grid); `geometry` scans the same body at
    another spacing or field of view and stores it along other axes.
    """
    model = modality_model(modality)
    grid = scan_grid(size, depth, geometry)
    columns, rows, slices = grid.shape
    rng = np.random.default_rng([seed, index, 0])
    anatomy = sample_anatomy(rng, columns, slices, height=rows, span=grid.span)
    stream = 1 + SYNTH_MODALITIES.index(modality)  # each modality its own noise, one shared anatomy
    image = render(anatomy.tissues, modality, np.random.default_rng([seed, index, stream]))
    if model.hounsfield:
        image = np.clip(np.rint(image), -1024, 3071).astype(np.int16)
    image_volume = Volume(image, spacing=grid.spacing, origin=grid.origin, modality=modality)
    label_volume = image_volume.with_array(anatomy.labels, labels=dict(LABELS))
    return orient(image_volume, geometry.orientation), orient(label_volume, geometry.orientation)


def generate_dataset(
    out: str | Path,
    modality: str,
    cases: int,
    seed: int,
    size: int = 96,
    dim: int = 3,
    test_fraction: float = 0.2,
    progress: bool = False,
    overwrite: bool = False,
    geometry: PhantomGeometry = DEFAULT_GEOMETRY,
) -> DatasetIndex:
    """Write `cases` phantom cases and index them; the last test_fraction of them (at least one when the
    fraction is above 0 and there are two cases or more) become test cases. `geometry` sets the
    orientation, spacing, field of view and image file format (the labels are NIfTI files). With
    `overwrite`, the case folders (imagesTr, labelsTr, imagesTs, labelsTs) are emptied first."""
    _check(cases, size, dim, test_fraction, modality, geometry)
    out = Path(out).expanduser()
    if out.exists() and not out.is_dir():
        raise DatasetError(f"{out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise DatasetError(f"{out} is not empty; choose a new folder or allow overwriting")
    for folder in _FOLDERS:  # overwriting starts the cases afresh: another format leaves no old files
        shutil.rmtree(out / folder, ignore_errors=True)
        (out / folder).mkdir(parents=True)
    tests = min(cases - 1, max(1, round(cases * test_fraction))) if test_fraction > 0 else 0
    depth = phantom_depth(size, dim)
    name = f"synth_{modality.replace('-', '')}"
    training, test = [], []
    for index in tqdm(range(cases), desc=f"synth {modality}", unit="case", disable=not progress):
        image, label = phantom_case(seed, index, modality, size, depth, geometry)
        suffix = "Ts" if index >= cases - tests else "Tr"
        case = f"{name}_{index:03d}"
        if geometry.file_format == "dicom":
            image_path = f"./images{suffix}/{case}/"
            _write_series(image, out / image_path, seed, index, f"{size}-{dim}", geometry)
        else:
            image_path = f"./images{suffix}/{case}.nii.gz"
            write_volume(image, out / image_path)
        pair = (image_path, f"./labels{suffix}/{case}.nii.gz")
        write_volume(label, out / pair[1])
        (test if suffix == "Ts" else training).append(pair)
    description = f"FedSeg synthetic abdominal phantom, {modality}, seed {seed}, {dim}D, size {size}"
    if geometry != DEFAULT_GEOMETRY:
        description += f", {geometry.describe()}"
    write_dataset_json(
        out, name=name, modality=modality, labels=LABELS, training=training, test=test,
        description=description,
    )
    return load_dataset(out)


def _write_series(
    image: Volume, folder: Path, seed: int, index: int, reference: str, geometry: PhantomGeometry
) -> None:
    """Write the image as a DICOM series with the UIDs that regenerating it gives again: one study per
    phantom patient, one frame of reference per body placement (the reference grid), one series per
    scan of it."""
    patient = f"{seed}-{index:03d}"
    write_dicom_series(
        image, folder, series_description=f"FedSeg phantom {image.modality}", patient_id=f"PHANTOM-{patient}",
        patient_name=f"Phantom^{patient}", study_uid=derived_uid("fedseg phantom study", seed, index),
        series_uid=derived_uid("fedseg phantom series", seed, index, image.modality, reference, geometry),
        frame_of_reference_uid=derived_uid("fedseg phantom frame", seed, index, reference),
    )


def _check(
    cases: int, size: int, dim: int, test_fraction: float, modality: str, geometry: PhantomGeometry
) -> None:
    """Reject bad settings before any folder is made."""
    modality_model(modality)
    problems = [
        (cases < 1, f"cases must be at least 1, got {cases}"),
        (not 16 <= size <= 512, f"size must be between 16 and 512 pixels, got {size}"),
        (dim not in (2, 3), f"dim must be 2 or 3, got {dim}"),
        (not 0.0 <= test_fraction < 1.0, f"test fraction must be in [0, 1), got {test_fraction}"),
    ]
    for failed, message in problems:
        if failed:
            raise ConfigError(message)
    scan_grid(size, phantom_depth(size, dim), geometry)
