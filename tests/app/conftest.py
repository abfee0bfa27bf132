"""Fixtures shared by the app tests (CLI, services, Qt workbench)."""

from pathlib import Path

import pytest


@pytest.fixture
def tiny_checkpoint(tmp_path) -> Path:
    """An untrained, seeded 2-level 2D U-Net checkpoint with labels background, liver, spleen, and a plan of
    2 mm in-plane spacing and 32 x 32 patches."""
    import torch

    from segmentation.checkpoint import Checkpoint, save_checkpoint
    from segmentation.plan import Plan
    from segmentation.settings import NetworkConfig

    network = NetworkConfig(out_channels=3, channels=(8, 16))
    torch.manual_seed(0)
    plan = Plan(labels={0: "background", 1: "liver", 2: "spleen"}, spatial_dims=2,
                target_spacing=(2.0, 2.0, 5.0), patch_size=(32, 32))
    checkpoint = Checkpoint(network, plan, network.build().state_dict(), augmentation="gin",
                            train_modality="ct", epoch=4)
    path = tmp_path / "model.pt"
    save_checkpoint(checkpoint, path)
    return path
