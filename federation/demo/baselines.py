"""What the federation is measured against: each site alone, and all sites' data pooled in one place.

Both train in this process with the federation's TrainingConfig (same plan, network, augmentation, seed
and hence initial weights) for the same number of epochs every site trains in the federated run. The
plan is the federation's own, made from every site's fingerprint: a local-only model follows it too, so
the comparison is of training, not of input geometry.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from segmentation.algorithm import SegmentationAlgorithm
from segmentation.datalist import CaseEntry, DatasetIndex
from segmentation.events import EventWriter, Listener
from segmentation.settings import TrainingConfig

CENTRALIZED = "centralized"
LOCAL_PREFIX = "local-only"


def local_only_name(site: str) -> str:
    return f"{LOCAL_PREFIX} {site}"


def train_model(
    job: str, training: TrainingConfig, cases: Sequence[CaseEntry], epochs: int, events_path: Path,
    listeners: Sequence[Listener] = (),
) -> SegmentationAlgorithm:
    """A model trained `epochs` epochs on `cases`, with the project's events under job `job`."""
    algorithm = SegmentationAlgorithm(training)
    with EventWriter(events_path, job=job, listeners=tuple(listeners)) as events:
        events.emit("started", epochs=epochs)
        result = algorithm.train(cases, epochs, events=events)
        events.emit("finished", metrics={"loss": result.loss})
    return algorithm


def train_baselines(
    training: TrainingConfig, datasets: Mapping[str, DatasetIndex], epochs: int, events_path: Path,
    listeners: Sequence[Listener] = (),
) -> dict[str, SegmentationAlgorithm]:
    """One local-only model per site (its own training cases) and one centralized model (all of them)."""
    models = {
        local_only_name(site): train_model(local_only_name(site), training, dataset.training, epochs,
                                           events_path, listeners)
        for site, dataset in datasets.items()
    }
    pooled = [case for dataset in datasets.values() for case in dataset.training]
    models[CENTRALIZED] = train_model(CENTRALIZED, training, pooled, epochs, events_path, listeners)
    return models
