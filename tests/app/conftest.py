"""Fixtures shared by the app tests (CLI, services, Qt workbench)."""

from pathlib import Path

import pytest


@pytest.fixture
def tiny_checkpoint(tmp_path) -> Path:
    """An untrained, seeded 2-level 2D U-Net checkpoint with labels background, liver, spleen."""
    import torch

    from segmentation.checkpoint import Checkpoint, save_checkpoint
    from segmentation.network import NetworkConfig
    from segmentation.preprocessing import Preprocessing

    network = NetworkConfig(out_channels=3, channels=(8, 16))
    torch.manual_seed(0)
    labels = {0: "background", 1: "liver", 2: "spleen"}
    checkpoint = Checkpoint(network, Preprocessing(image_size=(32, 32)), labels, network.build().state_dict(),
                            augmentation="gin", train_modality="ct", epoch=4)
    path = tmp_path / "model.pt"
    save_checkpoint(checkpoint, path)
    return path
