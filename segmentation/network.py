"""The segmentation network: MONAI's U-Net, described by a small config that travels with weights."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from monai.networks.nets import UNet

# FedGIN's 2D U-Net (arXiv 2508.05137): four levels of 32/64/128/256 channels.
FEDGIN_CHANNELS = (32, 64, 128, 256)


@dataclass(frozen=True)
class NetworkConfig:
    """Constructor arguments of the U-Net; validated here so a bad config fails before training."""

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
        return UNet(
            spatial_dims=self.spatial_dims,
            in_channels=self.in_channels,
            out_channels=self.out_channels,
            channels=self.channels,
            strides=self.strides,
            num_res_units=self.num_res_units,
            norm=self.norm,
            dropout=self.dropout,
        )

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> NetworkConfig:
        values = dict(data)
        values["channels"] = tuple(int(c) for c in values["channels"])
        return cls(**values)


def default_device() -> torch.device:
    """CUDA when present (a lent GPU, a hospital workstation), else the CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")
