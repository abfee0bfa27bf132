"""Model checkpoints: weights plus everything needed to use them (network, plan, labels).

Written atomically (temporary file + rename) so a crash never leaves half a checkpoint, and read
with torch's weights_only loader so a checkpoint from elsewhere cannot run code.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from segmentation.atomic import atomic_open
from segmentation.errors import CheckpointError, ConfigError
from segmentation.plan import Plan
from segmentation.settings import GLOBAL_MODEL, LOCAL_MODEL, MODEL_KINDS, NetworkConfig

FORMAT = "fedseg-checkpoint/2"
# Format 1 checkpoints squeezed every slice to a fixed image size and carry no plan; they cannot be used.
_PLANLESS_FORMATS = ("fedseg-checkpoint/1",)


@dataclass
class Checkpoint:
    """A trained (or training) model and the context it was trained in."""

    network: NetworkConfig
    plan: Plan
    state_dict: dict[str, torch.Tensor]
    augmentation: str = "none"
    train_modality: str = "unknown"
    epoch: int = 0
    optimizer_state: dict[str, Any] | None = None
    history: list[dict[str, Any]] = field(default_factory=list)
    training: dict[str, Any] = field(default_factory=dict)  # hyperparameters, to resume alike
    round: int = 0  # the federated round that produced a global model (0: not federated)
    kind: str = LOCAL_MODEL  # segmentation.settings.MODEL_KINDS: local, global or personalised

    @property
    def labels(self) -> dict[int, str]:
        return self.plan.labels

    def build_model(self, device: torch.device | str = "cpu") -> torch.nn.Module:
        model = self.network.build()
        model.load_state_dict(self.state_dict)
        return model.to(device).eval()


def save_checkpoint(checkpoint: Checkpoint, path: str | Path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "format": FORMAT,
        "network": checkpoint.network.to_dict(),
        "plan": checkpoint.plan.to_dict(),
        "state_dict": {k: v.detach().cpu() for k, v in checkpoint.state_dict.items()},
        "augmentation": checkpoint.augmentation,
        "train_modality": checkpoint.train_modality,
        "epoch": checkpoint.epoch,
        "optimizer_state": checkpoint.optimizer_state,
        "history": checkpoint.history,
        "training": checkpoint.training,
        "round": checkpoint.round,
        "kind": checkpoint.kind,
    }
    with atomic_open(path, "wb") as stream:
        torch.save(payload, stream)


def _kind(payload: dict[str, Any]) -> str:
    """The checkpoint's kind; one saved before kinds were written is a global model when a round made it."""
    kind = payload.get("kind", GLOBAL_MODEL if int(payload.get("round", 0)) > 0 else LOCAL_MODEL)
    if kind not in MODEL_KINDS:
        raise ConfigError(f"unknown model kind {kind!r} (one of {', '.join(MODEL_KINDS)})")
    return kind


def load_checkpoint(path: str | Path) -> Checkpoint:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises many types for corrupt files
        raise CheckpointError(f"{path}: not a readable checkpoint ({type(error).__name__})") from None
    if isinstance(payload, dict) and payload.get("format") in _PLANLESS_FORMATS:
        raise CheckpointError(
            f"{path} was made by an earlier version without a plan (format {payload['format']}): its model "
            "saw every slice squeezed to one size; train it again with this version"
        )
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a FedSeg checkpoint (expected format {FORMAT})")
    try:
        return Checkpoint(
            network=NetworkConfig.from_dict(payload["network"]),
            plan=Plan.from_dict(payload["plan"]),
            state_dict=payload["state_dict"],
            augmentation=payload.get("augmentation", "none"),
            train_modality=payload.get("train_modality", "unknown"),
            epoch=int(payload.get("epoch", 0)),
            optimizer_state=payload.get("optimizer_state"),
            history=list(payload.get("history", [])),
            training=dict(payload.get("training", {})),
            round=int(payload.get("round", 0)),
            kind=_kind(payload),
        )
    except (KeyError, TypeError, ValueError, ConfigError) as error:
        raise CheckpointError(f"{path}: checkpoint is incomplete ({error})") from None
