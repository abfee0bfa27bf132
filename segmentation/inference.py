"""Run a trained checkpoint on one volume and measure the result.

The mask comes back in the input's own geometry (shape, spacing, origin, direction), so it overlays
the study it was computed from and exports without resampling.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from monai.inferers import sliding_window_inference

from segmentation.checkpoint import Checkpoint
from segmentation.errors import CheckpointError
from segmentation.network import default_device
from segmentation.preprocessing import logits_to_label, network_input
from segmentation.volume import Volume

# progress(done, total): slices for 2D models; one step per volume for 3D models.
ProgressCallback = Callable[[int, int], None]


def model_input(checkpoint: Checkpoint, volume: Volume) -> torch.Tensor:
    """The volume as the checkpoint's network saw its training data.

    2D models get (z, 1, H, W) slices, 3D models a (1, 1, depth, H, W) volume, normalized with the
    checkpoint's settings (its modality statistics included, for domain-specific normalization) and
    the volume's modality. Inference prepares input only here, the same way training does.
    """
    settings, dims = checkpoint.preprocessing, checkpoint.network.spatial_dims
    return network_input(volume.array, settings, dims, volume.modality)


def predict_volume(
    checkpoint: Checkpoint,
    volume: Volume,
    device: torch.device | str | None = None,
    batch_size: int = 32,
    progress: ProgressCallback | None = None,
) -> Volume:
    """The checkpoint's uint8 label map of `volume`, in the volume's geometry, named by its labels."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    device = torch.device(device) if device is not None else default_device()
    model = _build_model(checkpoint, device)
    inputs = model_input(checkpoint, volume)
    with torch.inference_mode():
        if checkpoint.network.spatial_dims == 2:
            label = _predict_slices(model, inputs, volume.shape, device, batch_size, progress)
        else:
            label = _predict_whole(model, inputs, volume.shape, device, progress)
    return volume.with_array(label, labels=dict(checkpoint.labels))


def label_volumes_ml(mask: Volume) -> dict[str, float]:
    """Volume in millilitres of every named foreground label (0 is background), from the spacing."""
    voxel_ml = float(np.prod(mask.spacing)) / 1000.0  # spacing is in mm; 1 mL = 1000 mm^3
    values = np.asarray(mask.array).ravel().astype(np.int64)
    counts = np.bincount(values, minlength=max(mask.labels, default=0) + 1)
    present = {int(value) for value in np.flatnonzero(counts)}
    names = {value: mask.labels.get(value, f"label {value}") for value in present | set(mask.labels)}
    return {names[value]: float(counts[value]) * voxel_ml for value in sorted(names) if value != 0}


def _build_model(checkpoint: Checkpoint, device: torch.device) -> torch.nn.Module:
    """The checkpoint's network in eval mode, after checking it can label a one-channel image."""
    network = checkpoint.network
    if network.in_channels != 1:
        raise CheckpointError(f"the model expects {network.in_channels} input channels; volumes have 1")
    if sorted(checkpoint.labels) != list(range(network.out_channels)):
        raise CheckpointError(
            f"the checkpoint names labels {sorted(checkpoint.labels)} but its network predicts "
            f"{network.out_channels} classes"
        )
    try:
        return checkpoint.build_model(device)
    except RuntimeError as error:  # load_state_dict: missing, unexpected or mis-shaped weights
        reason = str(error).splitlines()[0]
        raise CheckpointError(f"the checkpoint's weights do not fit its network ({reason})") from None


def _predict_slices(
    model: torch.nn.Module,
    slices: torch.Tensor,
    shape: tuple[int, int, int],
    device: torch.device,
    batch_size: int,
    progress: ProgressCallback | None,
) -> np.ndarray:
    """Slice-wise 2D inference in batches; each batch is resized back to the volume's in-plane size."""
    depth = slices.shape[0]
    parts = []
    for start in range(0, depth, batch_size):
        logits = model(slices[start:start + batch_size].to(device))
        parts.append(logits_to_label(logits, (logits.shape[0], *shape[1:])))
        if progress is not None:
            progress(min(start + batch_size, depth), depth)
    return np.concatenate(parts, axis=0)


def _predict_whole(
    model: torch.nn.Module,
    image: torch.Tensor,
    shape: tuple[int, int, int],
    device: torch.device,
    progress: ProgressCallback | None,
) -> np.ndarray:
    """3D inference with MONAI's sliding-window inferer over windows of the training input size.

    Training resizes whole volumes to that size, so one window covers the input; the logits are
    resized back to the volume's own size before the argmax.
    """
    logits = sliding_window_inference(image.to(device), roi_size=image.shape[2:], sw_batch_size=1,
                                      predictor=model)
    if progress is not None:
        progress(1, 1)
    return logits_to_label(logits, shape)
