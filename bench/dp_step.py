"""A DP-SGD step against a plain step on the demo's network and batch, and the epsilon the demo would spend.

Both steps train the demo's 2D U-Net (DemoSettings.channels, one output per phantom label) with Dice+CE
and AdamW on the same 16 slices of the CT site, cut at the plan's 48 x 64 patch as private training cuts
them (segmentation.patches.SliceDataset). Plain: forward, backward, AdamW. DP: the same through
segmentation.privacy (Opacus's per-sample gradients, clipping to max_grad_norm, Gaussian noise, AdamW,
one accountant step). Both are timed in this one run, alternating in rounds, after a warm-up.
Target: ratio <= 2.5.

Then, for every demo site (its training slices as the federation's plan prepares them), the epsilon that
the default PrivacySettings reach at their delta after the demo's rounds x local epochs, from Opacus's RDP
accountant fed the steps directly. Last line: a JSON object.
"""

from __future__ import annotations

import json
import statistics
import tempfile
import time
from functools import reduce
from pathlib import Path

import torch
from monai.losses import DiceCELoss
from opacus.accountants import RDPAccountant

from federation.demo import DemoSettings
from federation.demo.data import demo_datasets
from segmentation.case_cache import CaseCache
from segmentation.fingerprint import fingerprint_cases
from segmentation.network import default_device
from segmentation.patches import SliceDataset
from segmentation.plan import Fingerprint, Plan, make_plan
from segmentation.privacy import PoissonSampling, PrivateTraining
from segmentation.settings import FOREGROUND_OVERSAMPLING, NetworkConfig, PrivacySettings

TARGET_RATIO = 2.5
STEPS = 10  # per round and kind
ROUNDS = 5


def time_steps(step, steps: int) -> float:
    """Seconds per step of `steps` calls, each ending on the loss on the host."""
    started = time.perf_counter()
    for _ in range(steps):
        step()
    return (time.perf_counter() - started) / steps


def main() -> None:
    device, settings, privacy = default_device(), DemoSettings(), PrivacySettings(dp=True)
    with tempfile.TemporaryDirectory() as tmp:
        plan, labels, slices = _demo_slices(Path(tmp), settings)
        ct = slices[settings.site_name("ct")]
        spread = range(0, len(ct), len(ct) // settings.batch_size)[:settings.batch_size]
        images, targets, _ = ct.collate([ct[index] for index in spread])
    images, targets = images.to(device), targets.to(device).long()
    network = NetworkConfig(out_channels=len(labels), channels=settings.channels)
    loss_function = DiceCELoss(to_onehot_y=True, softmax=True)

    torch.manual_seed(0)
    plain_model, private_model = network.build().to(device), network.build().to(device)
    private_model.load_state_dict(plain_model.state_dict())
    plain_optimizer = torch.optim.AdamW(plain_model.parameters(), lr=settings.learning_rate)
    private_optimizer = torch.optim.AdamW(private_model.parameters(), lr=settings.learning_rate)
    private = PrivateTraining(private_model, private_optimizer, privacy, settings.batch_size)
    private.loader(ct)  # sets the expected batch size and the sampling rate the steps use

    def plain_step() -> float:
        loss = loss_function(plain_model(images), targets)
        plain_optimizer.zero_grad(set_to_none=True)
        loss.backward()
        plain_optimizer.step()
        return loss.item()

    def private_step() -> float:
        loss = loss_function(private.module(images), targets)
        private.step(loss)
        return loss.item()

    time_steps(plain_step, 3)  # warm-up: allocator, kernels, Opacus's hooks
    time_steps(private_step, 3)
    plain, dp = [], []
    for _ in range(ROUNDS):
        plain.append(time_steps(plain_step, STEPS))
        dp.append(time_steps(private_step, STEPS))
    plain_s, dp_s = statistics.median(plain), statistics.median(dp)
    ratio = dp_s / plain_s

    total_epochs = settings.total_epochs
    spent = {name: _epsilon(privacy, len(records), settings.batch_size, total_epochs)
             for name, records in slices.items()}
    print(f"device {device}, 2D U-Net {network.channels}, {len(labels)} labels, batch {settings.batch_size} "
          f"x {plan.describe()}, {STEPS} steps x {ROUNDS} rounds each")
    print(f"plain step: {plain_s * 1000:.0f} ms")
    print(f"DP-SGD step: {dp_s * 1000:.0f} ms (noise {privacy.noise_multiplier:g}, "
          f"clipping {privacy.max_grad_norm:g})")
    print(f"ratio {ratio:.3f} (target <= {TARGET_RATIO})")
    for name, records in slices.items():
        sampling = PoissonSampling(len(records), settings.batch_size)
        print(f"{name}: {len(records)} slices, {sampling.steps} steps/epoch (q = 1/{sampling.steps}), "
              f"epsilon {spent[name]:.2f} at delta {privacy.delta:g} after {total_epochs} epochs "
              f"(budget {privacy.epsilon_budget:g})")
    print(json.dumps({
        "benchmark": "dp_step",
        "device": str(device),
        "batch": settings.batch_size,
        "steps": STEPS,
        "rounds": ROUNDS,
        "plain_ms_per_step": round(plain_s * 1000, 1),
        "dp_ms_per_step": round(dp_s * 1000, 1),
        "ratio": round(ratio, 3),
        "target_ratio": TARGET_RATIO,
        "met": ratio <= TARGET_RATIO,
        "noise_multiplier": privacy.noise_multiplier,
        "delta": privacy.delta,
        "epochs": total_epochs,
        "slices": {name: len(records) for name, records in slices.items()},
        "epsilon": {name: round(value, 3) for name, value in spent.items()},
        "within_budget": max(spent.values()) <= privacy.epsilon_budget,
    }))


def _demo_slices(
    folder: Path, settings: DemoSettings
) -> tuple[Plan, dict[int, str], dict[str, SliceDataset]]:
    """The demo's plan (from the sites' merged fingerprints, as its server makes it), labels, and every
    site's training slices as private training makes them records."""
    datasets = demo_datasets(folder / "data", settings)
    fingerprints = (fingerprint_cases(dataset.training, dataset.labels) for dataset in datasets.values())
    plan = make_plan(reduce(Fingerprint.merge, fingerprints), 2, settings.channels, settings.batch_size)
    cache = CaseCache(folder / "cache", plan)
    slices = {name: SliceDataset([cache.load(case) for case in dataset.training], plan.patch_size,
                                 FOREGROUND_OVERSAMPLING)
              for name, dataset in datasets.items()}
    return plan, plan.labels, slices


def _epsilon(privacy: PrivacySettings, records: int, batch_size: int, epochs: int) -> float:
    """Opacus's RDP accountant after `epochs` epochs of Poisson-sampled steps over `records` slices."""
    sampling = PoissonSampling(records, batch_size)
    accountant = RDPAccountant()
    accountant.history = [(privacy.noise_multiplier, sampling.rate, epochs * sampling.steps)]
    return accountant.get_epsilon(privacy.delta)


if __name__ == "__main__":
    main()
