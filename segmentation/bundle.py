"""Export a fedseg checkpoint as a MONAI bundle that MONAI's bundle runner segments studies with.

The bundle holds configs/metadata.json (MONAI's metadata fields, the labels and fedseg's plan),
configs/inference.json (MONAI's conventional ids: preprocessing, inferer, postprocessing, dataset,
dataloader, evaluator, initialize, run) and models/model.pt (the network's state dict). Its steps are
fedseg's inference path written as MONAI transforms: RAS orientation, the plan's spacing (a 2D plan
keeps the slices as stored), the box around the body, the plan's intensity normalization, sliding
windows of the plan's patch (half overlapping, Gaussian-weighted), and the class scores inverted onto
the study's grid before the argmax. segmentation.bundle_transforms supplies the few steps MONAI lacks, so
running the bundle needs fedseg installed (and nibabel, which MONAI's NIfTI I/O and Orientationd use).
"""

from __future__ import annotations

import json
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import monai
import numpy as np
import torch

from segmentation.atomic import atomic_open, write_text_atomic
from segmentation.checkpoint import Checkpoint, load_checkpoint
from segmentation.errors import ConfigError
from segmentation.inference import WINDOW_OVERLAP, load_model

METADATA_SCHEMA = (
    "https://github.com/Project-MONAI/MONAI-extra-test-data/releases/download/0.8.1/meta_schema_20240725.json"
)
BUNDLE_VERSION = "1.0.0"
CONFIG_PATH = Path("configs/inference.json")
METADATA_PATH = Path("configs/metadata.json")
MODEL_PATH = Path("models/model.pt")
# Measured by tests/segmentation/test_bundle.py and the figures in segmentation.bundle_transforms.
MATCH_NOTE = (
    "On the project's phantom studies its masks match `fedseg predict` with per-label Dice of 0.99 or "
    "more (1.0 where the study's grid needs no rounding). Single voxels can differ where fedseg and "
    "MONAI part ways: where the canonical grid reaches past the study's last voxel (fedseg fills the "
    "study's minimum, MONAI mirrors), at the edge of the body's box (fedseg scores background outside "
    "it, Invertd pads zero scores), and on an oblique study's grid (fedseg starts it at the first voxel, "
    "MONAI centres it)."
)


def export_bundle(checkpoint_path: str | Path, out_dir: str | Path, overwrite: bool = False) -> Path:
    """Write the bundle of a fedseg checkpoint into `out_dir` and return the folder.

    A folder that holds anything is refused (ConfigError) unless `overwrite`, which replaces the
    bundle's own files and leaves any others; a file that is not a fedseg checkpoint is a CheckpointError.
    """
    out = Path(out_dir).expanduser()
    if out.exists() and not out.is_dir():
        raise ConfigError(f"{out} exists and is not a folder; choose a folder for the bundle")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise ConfigError(f"{out} is not empty; choose an empty folder or allow overwriting its bundle")
    checkpoint = load_checkpoint(checkpoint_path)
    load_model(checkpoint, torch.device("cpu"))  # refuses weights that do not fit the network
    with atomic_open(out / MODEL_PATH, "wb") as stream:
        torch.save({name: value.detach().cpu() for name, value in checkpoint.state_dict.items()}, stream)
    write_text_atomic(out / METADATA_PATH, json.dumps(bundle_metadata(checkpoint), indent=2) + "\n")
    write_text_atomic(out / CONFIG_PATH, json.dumps(inference_config(checkpoint), indent=2) + "\n")
    return out


def bundle_metadata(checkpoint: Checkpoint) -> dict[str, Any]:
    """configs/metadata.json: MONAI's metadata fields, the labels by index and the plan."""
    plan, network = checkpoint.plan, checkpoint.network
    labels = {str(value): name for value, name in sorted(plan.labels.items())}
    names = ", ".join(name for value, name in sorted(plan.labels.items()) if value != 0)
    modality = checkpoint.train_modality
    patch = list(plan.patch_size)  # the network's (z,) y, x: the bundle transposes MONAI's x, y, z
    percentile = plan.modality_statistics is None
    return {
        "schema": METADATA_SCHEMA,
        "version": BUNDLE_VERSION,
        "changelog": {BUNDLE_VERSION: f"exported by fedseg from the model of epoch {checkpoint.epoch}"
                      + (f", federated round {checkpoint.round}" if checkpoint.round else "")},
        "monai_version": monai.__version__,
        "pytorch_version": torch.__version__.split("+")[0],
        "numpy_version": np.__version__,
        "required_packages_version": {name: _installed_version(name)
                                      for name in ("fedseg-workbench", "nibabel", "simpleitk")},
        "name": f"FedSeg {names} segmentation",
        "task": f"{plan.spatial_dims}D segmentation of {names} in {modality} studies",
        "description": (
            f"A MONAI U-Net trained with FedSeg Workbench ({checkpoint.augmentation} augmentation). The "
            f"bundle prepares a study as fedseg does: RAS orientation, {plan.describe()}, the box around "
            f"the body, {plan.normalization}; sliding windows overlap by {WINDOW_OVERLAP:g} with Gaussian "
            "weights, and the class scores go back onto the study's grid linearly before the argmax. "
            "Running it needs fedseg and nibabel installed (segmentation.bundle_transforms supplies the "
            "body's box, the linear inversion and the evaluator). " + MATCH_NOTE
        ),
        "authors": "FedSeg Workbench",
        "copyright": "The model's owners",
        "data_source": "the sites that trained the model (federated or local); no images left them",
        "data_type": "nifti",
        "image_classes": "one channel: the study's intensities, normalized by the bundle",
        "label_classes": ", ".join(f"{value}: {name}" for value, name in sorted(plan.labels.items())),
        "pred_classes": ", ".join(f"{value}: {name}" for value, name in sorted(plan.labels.items())),
        "eval_metrics": _last_metrics(checkpoint),
        "intended_use": "Research only; not for clinical decisions",
        "references": [
            "Federated Learning for Cross-Modality Medical Image Segmentation via Augmentation-Driven "
            "Generalization, arXiv 2602.20773",
            "FedGIN, arXiv 2508.05137",
        ],
        "labels": labels,
        "network_data_format": {
            "inputs": {"image": {
                "type": "image", "format": "hounsfield" if modality == "ct" else "magnitude",
                "modality": modality.upper(), "num_channels": network.in_channels, "spatial_shape": patch,
                "dtype": "float32", "value_range": [0, 1] if percentile else [],
                "is_patch_data": True, "channel_def": {"0": "image"},
            }},
            "outputs": {"pred": {
                "type": "image", "format": "segmentation", "num_channels": network.out_channels,
                "spatial_shape": patch, "dtype": "float32", "value_range": [],
                "is_patch_data": True, "channel_def": labels,
            }},
        },
        "fedseg": {
            "plan": plan.to_dict(),
            "normalization": plan.normalization,
            "network": network.to_dict(),
            "augmentation": checkpoint.augmentation,
            "train_modality": modality,
            "epoch": checkpoint.epoch,
            "round": checkpoint.round,
        },
    }


def inference_config(checkpoint: Checkpoint) -> dict[str, Any]:
    """configs/inference.json: MONAI's conventional inference ids around fedseg's inference path."""
    network = checkpoint.network
    return {
        "imports": ["$import glob", "$import os", "$import numpy", "$import torch",
                    "$import segmentation.bundle_transforms as bundle_transforms",
                    "$import segmentation.transforms.dsn as dsn"],
        "bundle_root": ".",
        "ckpt_path": "$os.path.join(@bundle_root, 'models', 'model.pt')",
        "output_dir": "$os.path.join(@bundle_root, 'eval')",
        "dataset_dir": "$os.path.join(@bundle_root, 'data')",
        "datalist": "$list(sorted(glob.glob(os.path.join(@dataset_dir, '*.nii*'))))",
        "modality": "unknown",
        "modality_statistics": checkpoint.plan.modality_statistics,
        "device": "$torch.device('cuda' if torch.cuda.is_available() else 'cpu')",
        "network_def": {
            "_target_": "monai.networks.nets.UNet",
            "spatial_dims": network.spatial_dims,
            "in_channels": network.in_channels,
            "out_channels": network.out_channels,
            "channels": list(network.channels),
            "strides": list(network.strides),
            "num_res_units": network.num_res_units,
            "norm": network.norm,
            "dropout": network.dropout,
        },
        "network": "$@network_def.to(@device)",
        "preprocessing": {"_target_": "Compose", "transforms": _preprocessing(checkpoint)},
        "dataset": {
            "_target_": "Dataset",
            "data": "$[{'image': path, 'modality': @modality} for path in @datalist]",
            "transform": "@preprocessing",
        },
        "dataloader": {"_target_": "DataLoader", "dataset": "@dataset", "batch_size": 1, "shuffle": False,
                       "num_workers": 0},
        "inferer": _inferer(checkpoint),
        "postprocessing": {"_target_": "Compose", "transforms": [
            {"_target_": "segmentation.bundle_transforms.LinearInversed", "keys": "image"},
            {"_target_": "Invertd", "keys": "pred", "transform": "@preprocessing", "orig_keys": "image",
             "nearest_interp": False, "to_tensor": True},
            {"_target_": "AsDiscreted", "keys": "pred", "argmax": True},
            {"_target_": "SaveImaged", "keys": "pred", "output_dir": "@output_dir", "output_postfix": "seg",
             "output_ext": ".nii.gz", "output_dtype": "$numpy.uint8", "resample": False,
             "separate_folder": False},
        ]},
        "evaluator": {
            "_target_": "segmentation.bundle_transforms.Evaluator",
            "device": "@device",
            "val_data_loader": "@dataloader",
            "network": "@network",
            "inferer": "@inferer",
            "postprocessing": "@postprocessing",
        },
        "initialize": [
            "$@network.load_state_dict(torch.load(@ckpt_path, map_location=@device, weights_only=True))",
        ],
        "run": ["$@evaluator.run()"],
    }


def _preprocessing(checkpoint: Checkpoint) -> list[dict[str, Any]]:
    """fedseg's preparation (segmentation.preprocessing) as MONAI dictionary transforms."""
    plan = checkpoint.plan
    x, y, z = plan.target_spacing
    return [
        {"_target_": "LoadImaged", "keys": "image", "image_only": True, "ensure_channel_first": True,
         "dtype": "$numpy.float32"},
        {"_target_": "Orientationd", "keys": "image", "axcodes": "RAS", "labels": None},
        # A 2D plan keeps each study's own slice spacing: MONAI keeps a non-positive pixdim as it is.
        {"_target_": "Spacingd", "keys": "image", "pixdim": [x, y, z if plan.spatial_dims == 3 else 0.0],
         "diagonal": True, "mode": 3, "padding_mode": "mirror", "dtype": "$numpy.float32"},
        {"_target_": "CropForegroundd", "keys": "image", "source_key": "image",
         "select_fn": "$bundle_transforms.body_box", "margin": 0, "allow_smaller": True},
        _normalization(checkpoint),
        # fedseg's arrays are (z, y, x), MONAI's (x, y, z): the network sees its slices and patches as
        # it was trained on them, not mirrored about the diagonal.
        {"_target_": "Transposed", "keys": "image", "indices": [0, 3, 2, 1]},
    ]


def _normalization(checkpoint: Checkpoint) -> dict[str, Any]:
    """The plan's intensity normalization: the image's own percentile window to [0, 1], or z-scores
    with the training modalities' statistics (the item's "modality"; its own foreground if unknown)."""
    plan = checkpoint.plan
    if plan.modality_statistics is None:
        return {"_target_": "ScaleIntensityRangePercentilesd", "keys": "image",
                "lower": plan.lower_percentile, "upper": plan.upper_percentile, "b_min": 0.0, "b_max": 1.0,
                "clip": True}
    return {"_target_": "segmentation.transforms.dsn.DomainSpecificNormalizationd", "keys": "image",
            "stats": "$dsn.ModalityStatistics.from_dict(@modality_statistics)",
            "modality_key": "modality"}


def _inferer(checkpoint: Checkpoint) -> dict[str, Any]:
    """Sliding windows of the plan's patch over the (z, y, x) image; a 2D network runs slice by slice."""
    plan = checkpoint.plan
    common = {"roi_size": list(plan.patch_size), "sw_batch_size": 16, "overlap": WINDOW_OVERLAP,
              "mode": "gaussian"}
    if plan.spatial_dims == 2:
        return {"_target_": "SliceInferer", "spatial_dim": 0, **common}
    return {"_target_": "SlidingWindowInferer", **common}


def _last_metrics(checkpoint: Checkpoint) -> dict[str, float]:
    """The validation metrics of the model's last recorded epoch (numbers only)."""
    last = checkpoint.history[-1] if checkpoint.history else {}
    return {key: float(value) for key, value in last.items()
            if key not in ("epoch", "loss") and isinstance(value, (int, float))}


def _installed_version(distribution: str) -> str:
    try:
        return version(distribution)
    except PackageNotFoundError:
        return "unknown"
