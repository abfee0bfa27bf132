"""Our full training step against a bare torch loop on the same network, batch and tensors.

Ours: SegmentationAlgorithm.train — patches cut from the cached prepared studies (foreground-
oversampled), GIN on the training device, forward, Dice+CE, backward, AdamW, one progress event per
step. Bare: the same U-Net, loss and optimizer stepping over patches cut beforehand, with nothing
else. Both are timed in this one run, alternating, after a warm-up. Target: ratio <= 1.25. Last line:
a JSON object.
"""

from __future__ import annotations

import json
import statistics
import tempfile
import time
from pathlib import Path

import torch
from monai.losses import DiceCELoss

from segmentation.algorithm import SegmentationAlgorithm
from segmentation.case_cache import CaseCache
from segmentation.fingerprint import plan_for_cases
from segmentation.network import default_device
from segmentation.patches import PatchDataset
from segmentation.settings import NetworkConfig, TrainingConfig
from segmentation.synth import generate_dataset

TARGET_RATIO = 1.25
BATCH = 16
REPEATS = 3


def time_ours(algorithm: SegmentationAlgorithm, dataset) -> tuple[float, int]:
    """Seconds per step over one epoch, from the step events' own timestamps (first step excluded)."""
    stamps: list[float] = []

    class Recorder:
        def emit(self, kind: str, **fields) -> None:
            if kind == "progress":
                stamps.append(time.perf_counter())

    algorithm.train(dataset, 1, events=Recorder())  # type: ignore[arg-type]
    return (stamps[-1] - stamps[0]) / (len(stamps) - 1), len(stamps) - 1


def time_bare(config: TrainingConfig, data: PatchDataset, steps: int, device: torch.device) -> float:
    """Seconds per step of the textbook loop over patches already in memory."""
    model = config.network.build().to(device)
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay
    )
    loss_function = DiceCELoss(to_onehot_y=True, softmax=True)
    batches = [data[index % len(data)] for index in range(steps + 1)]
    images = [batch[0].to(device) for batch in batches]
    labels = [batch[1].to(device).long() for batch in batches]
    for step in range(steps + 1):
        if step == 1:
            started = time.perf_counter()
        loss = loss_function(model(images[step]), labels[step])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        loss.item()
    return (time.perf_counter() - started) / steps


def main() -> None:
    device = default_device()
    with tempfile.TemporaryDirectory() as tmp:
        dataset = generate_dataset(Path(tmp) / "ct", "ct", 6, 0, size=96, test_fraction=0.0)
        network = NetworkConfig(out_channels=len(dataset.labels))
        plan, _ = plan_for_cases(dataset.training, dataset.labels, network, BATCH)
        config = TrainingConfig(plan=plan, network=network, augmentation="gin", batch_size=BATCH,
                                cache_dir=Path(tmp) / "cache")
        algorithm = SegmentationAlgorithm(config, device)
        algorithm.train(dataset, 1)  # warm-up: fills the case cache and the allocator
        cache = CaseCache(config.cache_dir, plan)
        data = PatchDataset([cache.load(case) for case in dataset.training], plan.patch_size, BATCH,
                            config.foreground_oversampling)
        ours, bare = [], []
        for _ in range(REPEATS):
            seconds, steps = time_ours(algorithm, dataset)
            ours.append(seconds)
            bare.append(time_bare(config, data, steps, device))
    ours_s, bare_s = statistics.median(ours), statistics.median(bare)
    ratio = ours_s / bare_s
    print(
        f"device {device}, 2D U-Net {config.network.channels}, batch {BATCH} x {plan.describe()}, "
        f"{steps} steps x {REPEATS}"
    )
    print(f"ours (patches + GIN + step): {ours_s * 1000:.0f} ms/step, {BATCH / ours_s:.1f} patches/s")
    print(f"bare torch loop:             {bare_s * 1000:.0f} ms/step, {BATCH / bare_s:.1f} patches/s")
    print(f"ratio {ratio:.3f} (target <= {TARGET_RATIO})")
    print(
        json.dumps(
            {
                "benchmark": "train_step",
                "device": str(device),
                "batch": BATCH,
                "steps": steps,
                "repeats": REPEATS,
                "ours_ms_per_step": round(ours_s * 1000, 1),
                "bare_ms_per_step": round(bare_s * 1000, 1),
                "ours_patches_per_s": round(BATCH / ours_s, 2),
                "bare_patches_per_s": round(BATCH / bare_s, 2),
                "ratio": round(ratio, 3),
                "target_ratio": TARGET_RATIO,
                "met": ratio <= TARGET_RATIO,
            }
        )
    )


if __name__ == "__main__":
    main()
