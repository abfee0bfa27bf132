"""A training run's driver: train to a number of epochs, checkpointing into a run folder as it goes.

A run folder holds model.pt (checkpoint after every epoch), plan.json (the plan the run follows),
events.jsonl (the job's event stream) and history.csv (one row per epoch: loss and validation metrics),
so a run can be watched, resumed and compared with nothing but the folder. The settings themselves live
in segmentation.settings, which needs no torch.
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from segmentation.algorithm import SegmentationAlgorithm
from segmentation.atomic import atomic_open
from segmentation.checkpoint import save_checkpoint
from segmentation.datalist import CaseEntry, DatasetIndex
from segmentation.events import EventWriter
from segmentation.plan import write_plan
from segmentation.settings import CHECKPOINT_NAME, HISTORY_NAME, PLAN_NAME, TrainResult


def run_training(
    algorithm: SegmentationAlgorithm,
    dataset: DatasetIndex,
    total_epochs: int,
    out: Path,
    events: EventWriter,
    validation: Sequence[CaseEntry] = (),
    stop: Callable[[], bool] | None = None,
) -> TrainResult:
    """Train until `total_epochs` epochs are done, checkpointing into `out` after every epoch.

    A stop request (stop() true, or KeyboardInterrupt) saves the current weights, emits "stopped"
    and returns with stopped=True; the interrupted epoch is repeated on resume.
    """
    checkpoint_path = out / CHECKPOINT_NAME
    write_plan(algorithm.config.plan, out / PLAN_NAME)

    def save(epoch: int) -> None:
        write_plan(algorithm.config.plan, out / PLAN_NAME)  # domain-specific statistics join it in training
        save_checkpoint(algorithm.to_checkpoint(train_modality=dataset.modality), checkpoint_path)
        write_history(algorithm.history, out / HISTORY_NAME)
        events.emit("checkpoint", epoch=epoch)

    events.emit("started", epochs=total_epochs, start_epoch=algorithm.epoch)
    try:
        result = algorithm.train(
            dataset, max(0, total_epochs - algorithm.epoch), events=events, stop=stop,
            validation=validation, on_epoch=save,
        )
    except KeyboardInterrupt:
        result = TrainResult(0, algorithm.epoch, float("nan"), 0, stopped=True)
    if result.stopped:
        save(algorithm.epoch)
        events.emit("stopped", epoch=algorithm.epoch)
    else:
        if not checkpoint_path.exists():
            save(algorithm.epoch)
        events.emit("finished", metrics={"loss": result.loss, **result.metrics})
    return result


def write_history(history: Sequence[dict[str, Any]], path: Path) -> None:
    """One CSV row per epoch; columns are every key seen, in order of first appearance."""
    columns: dict[str, None] = {}
    for record in history:
        columns.update(dict.fromkeys(record))
    with atomic_open(path, "w", newline="", encoding="utf-8") as stream:
        writer = csv.DictWriter(stream, fieldnames=list(columns))
        writer.writeheader()
        writer.writerows(history)
