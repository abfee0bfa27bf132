"""Run a model on one study: the plan's canonical grid in, sliding windows, the mask back on the study's grid.

The study is prepared as training data was (segmentation.preprocessing: canonical grid, the box around
the body, normalized). MONAI's sliding-window inferer covers the box with windows of the plan's patch
size (half overlapping, Gaussian-weighted as nnU-Net blends them); the class scores are resampled onto
the study's own grid and only then turned into labels. The mask has the input's size, spacing, origin
and direction, so it overlays the study and exports as is.
Evaluation during training goes through segment() too: one inference path.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
import torch
from monai.inferers import sliding_window_inference

from segmentation.checkpoint import Checkpoint
from segmentation.errors import CheckpointError, first_line
from segmentation.geometry import Grid, scores_to_grid
from segmentation.network import default_device
from segmentation.plan import Plan
from segmentation.preprocessing import PreparedStudy, prepare_study
from segmentation.volume import Volume

# progress(done, total): slices for 2D models; one step per volume for 3D models.
ProgressCallback = Callable[[int, int], None]
WINDOW_OVERLAP = 0.5


def segment(
    model: torch.nn.Module,
    volume: Volume,
    plan: Plan,
    device: torch.device,
    batch_size: int = 16,
    progress: ProgressCallback | None = None,
) -> np.ndarray:
    """The (z, y, x) uint8 label map of `volume` on its own grid."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    prepared = prepare_study(volume, plan)
    model.eval()
    with torch.inference_mode():
        scores = canonical_scores(model, prepared.image, plan, device, batch_size, progress)
    return scores_to_grid(_whole_grid_channels(scores, prepared), prepared.grid, Grid.of(volume))


def _whole_grid_channels(scores: np.ndarray, prepared: PreparedStudy) -> Iterator[np.ndarray]:
    """Each class's scores of the body's box on the whole canonical grid, one class at a time (memory);
    outside the box background wins, with scores in the network's own range so that interpolation near
    the box stays tame."""
    whole_shape = tuple(prepared.grid.size[::-1])
    for value, channel in enumerate(scores):
        if channel.shape == whole_shape:
            yield channel
            continue
        whole = np.full(whole_shape, channel.max() if value == 0 else channel.min(), dtype=np.float32)
        whole[prepared.region] = channel
        yield whole


def canonical_scores(
    model: torch.nn.Module, image: np.ndarray, plan: Plan, device: torch.device, batch_size: int,
    progress: ProgressCallback | None = None,
) -> np.ndarray:
    """Per-class scores (C, z, y, x) float32 of a prepared (z, y, x) image, by sliding windows."""
    def windows(batch: torch.Tensor) -> torch.Tensor:
        return sliding_window_inference(
            batch.to(device), roi_size=plan.patch_size, sw_batch_size=batch_size, predictor=model,
            overlap=WINDOW_OVERLAP, mode="gaussian",
        ).float().cpu()

    tensor = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))
    if plan.spatial_dims == 3:
        scores = windows(tensor[None, None])[0].numpy()
        if progress is not None:
            progress(1, 1)
        return scores
    depth = image.shape[0]
    scores = np.empty((len(plan.labels), *image.shape), dtype=np.float32)  # filled batch by batch
    for start in range(0, depth, batch_size):
        batch = windows(tensor[start:start + batch_size, None]).numpy()  # slices as a batch
        scores[:, start:start + len(batch)] = batch.transpose(1, 0, 2, 3)
        if progress is not None:
            progress(min(start + batch_size, depth), depth)
    return scores


def predict_volume(
    checkpoint: Checkpoint,
    volume: Volume,
    device: torch.device | str | None = None,
    batch_size: int = 16,
    progress: ProgressCallback | None = None,
) -> Volume:
    """The checkpoint's uint8 label map of `volume`, in the volume's geometry, named by its labels."""
    device = torch.device(device) if device is not None else default_device()
    model = load_model(checkpoint, device)
    label = segment(model, volume, checkpoint.plan, device, batch_size, progress)
    return volume.with_array(label, labels=dict(checkpoint.labels))


def label_volumes_ml(mask: Volume) -> dict[str, float]:
    """Volume in millilitres of every named foreground label (0 is background), from the spacing."""
    voxel_ml = float(np.prod(mask.spacing)) / 1000.0  # spacing is in mm; 1 mL = 1000 mm^3
    values = np.asarray(mask.array).ravel().astype(np.int64)
    counts = np.bincount(values, minlength=max(mask.labels, default=0) + 1)
    present = {int(value) for value in np.flatnonzero(counts)}
    names = {value: mask.labels.get(value, f"label {value}") for value in present | set(mask.labels)}
    return {names[value]: float(counts[value]) * voxel_ml for value in sorted(names) if value != 0}


def load_model(checkpoint: Checkpoint, device: torch.device) -> torch.nn.Module:
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
        raise CheckpointError(f"the checkpoint's weights do not fit its network ({first_line(error)})"
                              ) from None
