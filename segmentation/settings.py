"""Training settings and names, readable without torch: the network's shape, the training
hyperparameters, the learning-rate schedule, a site's differential privacy, a training call's result and a
run folder's file names.

The GUI, the CLI's argument parsing and the federation's supervisors import this module; the engine that
acts on these settings (segmentation.algorithm, segmentation.network) is what loads torch.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from segmentation.errors import ConfigError
from segmentation.plan import Plan

if TYPE_CHECKING:
    import torch

CHECKPOINT_NAME = "model.pt"
EVENTS_NAME = "events.jsonl"
HISTORY_NAME = "history.csv"
PLAN_NAME = "plan.json"
GLOBAL_MODEL_NAME = "global-model.pt"  # a federation site keeps the latest global model it received here
PERSONALISED_MODEL_NAME = "personalised-model.pt"  # and the final one fine-tuned on its own data here

# What a checkpoint holds (its `kind`): a model trained on one dataset, a federation's global model, or a
# global model fine-tuned at one site for its own scanner.
LOCAL_MODEL, GLOBAL_MODEL, PERSONALISED_MODEL = "local", "global", "personalised"
MODEL_KINDS = (LOCAL_MODEL, GLOBAL_MODEL, PERSONALISED_MODEL)

# Kept literal so settings need no torch; a test checks it equals segmentation.transforms.AUGMENTATIONS.
AUGMENTATION_NAMES = ("none", "gin", "gin-ipa", "randconv", "fourier", "dsn")
LEARNING_RATE_SCHEDULES = ("constant", "cosine")
# FedGIN's 2D U-Net (arXiv 2508.05137): four levels of 32/64/128/256 channels.
FEDGIN_CHANNELS = (32, 64, 128, 256)
# nnU-Net's share of training patches forced to hold foreground.
FOREGROUND_OVERSAMPLING = 1 / 3

# Augmentations that change each sample by itself: DP-SGD's per-sample clipping bounds one slice's influence
# only while no other sample's data reaches its gradient. Fourier mixes in another sample of the batch and DSN
# normalizes with statistics pooled over every case, so neither trains privately.
PRIVATE_AUGMENTATIONS = ("none", "gin", "gin-ipa", "randconv")

# Hyperparameters that may change between sessions of one run (e.g. on --resume); the network, the plan
# and the augmentation define the model and may not.
_HYPERPARAMETERS = (
    "learning_rate", "weight_decay", "batch_size", "seed", "proximal_mu", "num_workers",
    "foreground_oversampling", "augmentation_probability", "learning_rate_schedule",
)


@dataclass(frozen=True)
class NetworkConfig:
    """Constructor arguments of MONAI's U-Net; validated here so a bad config fails before training."""

    spatial_dims: int = 2
    in_channels: int = 1
    out_channels: int = 2
    channels: tuple[int, ...] = FEDGIN_CHANNELS
    num_res_units: int = 1
    norm: str = "instance"
    dropout: float = 0.0

    def __post_init__(self) -> None:
        if self.spatial_dims not in (2, 3):
            raise ValueError(f"spatial_dims must be 2 or 3, got {self.spatial_dims}")
        if self.out_channels < 2:
            raise ValueError("out_channels counts background too and must be at least 2")
        if len(self.channels) < 2 or any(c <= 0 for c in self.channels):
            raise ValueError(f"channels must be two or more positive widths, got {self.channels}")
        if self.norm not in ("instance", "batch"):
            raise ValueError(f"norm must be 'instance' or 'batch', got {self.norm!r}")

    @property
    def strides(self) -> tuple[int, ...]:
        return (2,) * (len(self.channels) - 1)

    @property
    def size_multiple(self) -> int:
        """Input sizes must be multiples of this for the down/up-sampling to line up."""
        return 2 ** (len(self.channels) - 1)

    def build(self) -> torch.nn.Module:
        """The network itself (loads torch and MONAI)."""
        from segmentation.network import build_network

        return build_network(self)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> NetworkConfig:
        values = dict(data)
        values["channels"] = tuple(int(c) for c in values["channels"])
        return cls(**values)


@dataclass(frozen=True)
class TrainingConfig:
    """Everything that shapes local training.

    The plan fixes how studies become patches (see segmentation.plan). proximal_mu > 0 adds FedProx's
    mu/2 * ||w - w_start||^2, w_start being the weights at the start of each train() call (the global
    model in a federated round). foreground_oversampling is the share of patches centred on a labelled
    voxel (the rest are centred anywhere). cache_dir None means the user's cache folder.
    augmentation_probability is the share of samples each batch augments: the rest keep the in-modality
    Dice of unaugmented training while the augmented ones teach the unseen modalities
    (docs/augmentations.md). learning_rate_schedule "cosine" decays the rate to zero over each train()
    call, so a fixed step budget ends on a settled model; "constant" suits federated rounds.
    """

    plan: Plan
    network: NetworkConfig = field(default_factory=NetworkConfig)
    augmentation: str = "gin"
    augmentation_probability: float = 0.3
    learning_rate_schedule: str = "constant"
    learning_rate: float = 1e-3
    weight_decay: float = 1e-4
    batch_size: int = 16
    seed: int = 0
    proximal_mu: float = 0.0
    num_workers: int = 0
    foreground_oversampling: float = FOREGROUND_OVERSAMPLING
    cache_dir: Path | None = None

    def __post_init__(self) -> None:
        if self.augmentation not in AUGMENTATION_NAMES:
            raise ConfigError(
                f"augmentation {self.augmentation!r} is unknown; choose one of: "
                + ", ".join(AUGMENTATION_NAMES)
            )
        if self.learning_rate_schedule not in LEARNING_RATE_SCHEDULES:
            raise ConfigError(
                f"learning_rate_schedule {self.learning_rate_schedule!r} is unknown; choose one of: "
                + ", ".join(LEARNING_RATE_SCHEDULES)
            )
        checks = {
            "learning_rate": self.learning_rate > 0,
            "weight_decay": self.weight_decay >= 0,
            "batch_size": self.batch_size >= 1,
            "proximal_mu": self.proximal_mu >= 0,
            "num_workers": self.num_workers >= 0,
            "foreground_oversampling": 0.0 <= self.foreground_oversampling <= 1.0,
            "augmentation_probability": 0.0 <= self.augmentation_probability <= 1.0,
        }
        for name, valid in checks.items():
            if not valid:
                raise ConfigError(f"{name} = {getattr(self, name)} is out of range")
        self.plan.check_network(self.network.spatial_dims, self.network.size_multiple)
        if len(self.plan.labels) != self.network.out_channels:
            raise ConfigError(f"the plan names {len(self.plan.labels)} labels but the network predicts "
                              f"{self.network.out_channels} classes")

    @property
    def labels(self) -> dict[int, str]:
        return self.plan.labels

    def hyperparameters(self) -> dict[str, Any]:
        """The plain-valued settings stored in a checkpoint beside network and plan."""
        values = asdict(self)
        return {name: values[name] for name in _HYPERPARAMETERS}

    def with_hyperparameters(self, values: dict[str, Any]) -> TrainingConfig:
        """This config with known hyperparameters replaced (unknown keys are ignored)."""
        return replace(self, **{name: values[name] for name in _HYPERPARAMETERS if name in values})


# The metric a site training with DP-SGD reports the epsilon it has spent under (the federation's replies,
# the workbench's Metrics page).
EPSILON_METRIC = "epsilon"


def epsilon_by_round(records: Iterable[Any]) -> dict[str, list[tuple[int, float]]]:
    """Each DP site's epsilon spent by the end of each round's training, from records with .site,
    .round, .phase and .metrics (the server's and the workbench's alike). A dropped update counts too:
    the site spent the privacy when it trained."""
    spent: dict[str, dict[int, float]] = {}
    for record in records:
        value = record.metrics.get(EPSILON_METRIC)
        if record.phase == "train" and isinstance(value, (int, float)) and not isinstance(value, bool):
            spent.setdefault(record.site, {})[record.round] = float(value)
    return {site: sorted(rounds.items()) for site, rounds in spent.items()}


@dataclass(frozen=True)
class PrivacySettings:
    """A site's differential privacy: training uses DP-SGD (segmentation.privacy) when `dp` is on.

    The unit of privacy is one training slice (an axial slice of one case, as prepared by the plan):
    (epsilon, delta) bound what the weights a site shares can tell about whether any one slice was in its
    training data. A patient of k slices is protected as a group of k, far more weakly. Each slice's gradient
    is clipped to max_grad_norm and Gaussian noise of noise_multiplier * max_grad_norm is added to the batch's
    sum; epsilon_budget is what the site lets all its training spend at `delta`, across rounds and restarts.
    The defaults keep every site of the demo (240 to 384 slices, batch 16) within epsilon 10 at delta 1e-5
    over its 80 epochs (bench/dp_step.py prints the figure).
    """

    dp: bool = False
    noise_multiplier: float = 1.5
    max_grad_norm: float = 1.0
    delta: float = 1e-5
    epsilon_budget: float = 10.0

    def __post_init__(self) -> None:
        positive = "must be a number above 0"
        rules = {
            "noise_multiplier": (_positive(self.noise_multiplier), f"{positive} (no noise gives no privacy)"),
            "max_grad_norm": (_positive(self.max_grad_norm), positive),
            "delta": (_positive(self.delta) and self.delta < 1, "must lie between 0 and 1"),
            "epsilon_budget": (_positive(self.epsilon_budget), positive),
        }
        for name, (valid, rule) in rules.items():
            if not valid:
                raise ConfigError(f"privacy {name} {rule}, got {getattr(self, name)}")

    def check_training(self, config: TrainingConfig) -> None:
        """ConfigError when `dp` is on but the training could not keep the guarantee: a 3D plan has no slice
        to be the unit, and some augmentations mix samples' data."""
        if not self.dp:
            return
        if config.plan.spatial_dims != 2:
            raise ConfigError("differential privacy needs a 2D plan, since its unit of privacy is one slice")
        if config.augmentation not in PRIVATE_AUGMENTATIONS:
            raise ConfigError(f"augmentation {config.augmentation!r} mixes samples' data, which differential "
                              f"privacy cannot allow; choose one of: {', '.join(PRIVATE_AUGMENTATIONS)}")


def _positive(value: float) -> bool:
    return math.isfinite(value) and value > 0


def learning_rate_schedule(config: TrainingConfig, steps: int) -> list[float]:
    """The learning rate of each of `steps` optimisation steps under the config's schedule."""
    if config.learning_rate_schedule == "constant":
        return [config.learning_rate] * steps
    return [0.5 * config.learning_rate * (1.0 + math.cos(math.pi * step / steps)) for step in range(steps)]


@dataclass(frozen=True)
class TrainResult:
    """Outcome of one train() call. num_examples (training samples per epoch) weights federated averaging."""

    epochs: int
    epoch: int
    loss: float
    num_examples: int
    stopped: bool
    metrics: dict[str, float] = field(default_factory=dict)
