"""A real-size CT through the whole engine: plan, preprocessing, sliding-window inference, training speed.

The study: 512 x 512 x 200 voxels at 0.7 x 0.7 x 2.5 mm (a phantom CT rendered at that spacing, its
80 slices mirrored to 200), stored as NIfTI. Measured in a fresh child process so that the peak
memory is the engine's alone: the plan (fingerprint + rules), reading and preparing the study
(canonical grid, normalization), 2D inference with the default network (FedGIN's 32-256 U-Net, random
weights: the cost does not depend on them) by sliding windows of the planned patch, and training
patches per second at the planned patch size. On CUDA when present. Targets: inference <= 60 s on 2 CPU
cores, peak RSS <= 4096 MB. Last line: a JSON object.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

INFERENCE_TARGET_S = 60.0
PEAK_RSS_TARGET_MB = 4096.0
SPACING = (0.7, 0.7, 2.5)
SIZE, SLICES = 512, 200
TRAINING_STEPS = 6
MEASURE = "--measure"


def make_study(folder: Path) -> Path:
    """The phantom CT at the bench's spacing as an MSD dataset folder of one labelled case."""
    from segmentation.datalist import write_dataset_json
    from segmentation.io import write_volume
    from segmentation.synth import LABELS, PhantomGeometry, phantom_case

    geometry = PhantomGeometry(spacing=SPACING, field_of_view_mm=SIZE * SPACING[0])
    image, label = phantom_case(0, 0, "ct", SIZE, 80, geometry=geometry)
    there_and_back = np.concatenate([np.arange(image.shape[0]), np.arange(image.shape[0])[::-1]])
    order = there_and_back[np.arange(SLICES) % there_and_back.size]
    write_volume(image.with_array(np.ascontiguousarray(image.array[order])), folder / "images" / "ct.nii.gz")
    write_volume(label.with_array(np.ascontiguousarray(label.array[order])), folder / "labels" / "ct.nii.gz")
    write_dataset_json(folder, name="real-size", modality="ct", labels=LABELS,
                       training=[("images/ct.nii.gz", "labels/ct.nii.gz")], test=[])
    return folder


def measure(folder: Path) -> dict:
    """Every figure of one run, in this (fresh) process."""
    import torch

    from segmentation.algorithm import SegmentationAlgorithm
    from segmentation.checkpoint import Checkpoint
    from segmentation.datalist import load_dataset
    from segmentation.fingerprint import plan_for_cases
    from segmentation.inference import predict_volume
    from segmentation.io import read_volume
    from segmentation.network import default_device
    from segmentation.preprocessing import prepare_study
    from segmentation.settings import NetworkConfig, TrainingConfig

    device = default_device()
    dataset = load_dataset(folder)
    network = NetworkConfig(out_channels=len(dataset.labels))
    started = time.perf_counter()
    plan, _ = plan_for_cases(dataset.training, dataset.labels, network, batch_size=16)
    plan_seconds = time.perf_counter() - started

    started = time.perf_counter()
    study = read_volume(dataset.training[0].image)
    prepared = prepare_study(study, plan)
    preprocess_seconds = time.perf_counter() - started
    del prepared

    checkpoint = Checkpoint(network=network, plan=plan, state_dict=network.build().state_dict())
    started = time.perf_counter()
    mask = predict_volume(checkpoint, study, device=device)
    if device.type == "cuda":
        torch.cuda.synchronize()
    inference_seconds = time.perf_counter() - started
    assert mask.shape == study.shape

    config = TrainingConfig(plan=plan, network=network, cache_dir=folder / "cache")
    algorithm = SegmentationAlgorithm(config, device)
    stamps: list[float] = []

    class Steps:
        def emit(self, kind: str, **fields) -> None:
            if kind == "progress":
                stamps.append(time.perf_counter())

    algorithm.train(dataset, 1, events=Steps(), stop=lambda: len(stamps) > TRAINING_STEPS)  # type: ignore[arg-type]
    patches_per_second = config.batch_size * (len(stamps) - 1) / (stamps[-1] - stamps[0])
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {
        "device": str(device), "study": [SLICES, SIZE, SIZE], "spacing_mm": list(SPACING),
        "plan": plan.describe(), "patch_size": list(plan.patch_size),
        "plan_seconds": round(plan_seconds, 2), "preprocess_seconds": round(preprocess_seconds, 2),
        "inference_seconds": round(inference_seconds, 2), "peak_rss_mb": round(peak_kb / 1024, 1),
        "patches_per_second": round(patches_per_second, 2), "training_batch": config.batch_size,
    }


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        folder = make_study(Path(tmp) / "data")
        child = subprocess.run([sys.executable, __file__, MEASURE, str(folder)], capture_output=True,
                               text=True, check=True)
    figures = json.loads(child.stdout.strip().splitlines()[-1])
    inference_ratio = figures["inference_seconds"] / INFERENCE_TARGET_S
    memory_ratio = figures["peak_rss_mb"] / PEAK_RSS_TARGET_MB
    print(f"study {SLICES} x {SIZE} x {SIZE} at {SPACING} mm on {figures['device']}; plan: {figures['plan']}")
    print(f"plan {figures['plan_seconds']:.1f} s, read + prepare {figures['preprocess_seconds']:.1f} s")
    print(f"inference {figures['inference_seconds']:.1f} s (target {INFERENCE_TARGET_S:.0f} s, "
          f"ratio {inference_ratio:.2f}); peak RSS {figures['peak_rss_mb']:.0f} MB (target "
          f"{PEAK_RSS_TARGET_MB:.0f} MB, ratio {memory_ratio:.2f})")
    print(f"training: {figures['patches_per_second']:.1f} patches/s at batch {figures['training_batch']}")
    print(json.dumps({
        "benchmark": "real_size", **figures,
        "inference_target_s": INFERENCE_TARGET_S, "inference_ratio": round(inference_ratio, 3),
        "peak_rss_target_mb": PEAK_RSS_TARGET_MB, "peak_rss_ratio": round(memory_ratio, 3),
        "met": inference_ratio <= 1.0 and memory_ratio <= 1.0,
    }))


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == MEASURE:
        print(json.dumps(measure(Path(sys.argv[2]))))
    else:
        main()
