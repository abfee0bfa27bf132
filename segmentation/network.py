"""The segmentation network: MONAI's U-Net built from a NetworkConfig (segmentation.settings)."""

from __future__ import annotations

import torch
from monai.networks.nets import UNet

from segmentation.settings import NetworkConfig


def build_network(config: NetworkConfig) -> torch.nn.Module:
    return UNet(
        spatial_dims=config.spatial_dims,
        in_channels=config.in_channels,
        out_channels=config.out_channels,
        channels=config.channels,
        strides=config.strides,
        num_res_units=config.num_res_units,
        norm=config.norm,
        dropout=config.dropout,
    )


def default_device() -> torch.device:
    """CUDA when present (a lent GPU, a hospital workstation), else the CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")
