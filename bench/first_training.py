"""A new user's first local training, as the workbench runs it.

Makes the demo workspace as `fedseg gui --demo` does (timed), runs the Training page's default request on
the demo CT site as the page does (`fedseg train` in a child process, with an empty study cache as on a
first run), scores the model on the site's test cases with `fedseg evaluate`, and replays the run's own
events through the page's model to compare its ETA at 10%, 25% and 50% of the run with the time really
left (the finished event's time). Targets (issue 13): mean test Dice >= 0.6 within 180 s from start to
exit on 2 CPU cores. Prints the figures and never asserts a timing; the last line is a JSON object.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from app.models.training import TrainingRunModel
from app.services.demo import DEMO_CASES, DEMO_SITES, prepare_demo_workspace
from app.services.settings import TrainingDefaults
from app.services.training_job import TrainingJob, TrainingLength, TrainingRequest, training_slices
from segmentation.case_cache import CACHE_DIR_ENVIRONMENT
from segmentation.events import read_events
from segmentation.settings import CHECKPOINT_NAME, EVENTS_NAME

SITE = "ct"
TARGET_DICE = 0.6
TARGET_SECONDS = 180.0
FRACTIONS = (0.1, 0.25, 0.5)
POLL_SECONDS = 0.2


def default_request(data: Path, out: Path) -> TrainingRequest:
    """What the Training page starts on `data` with its defaults: the epochs nearest to the default length
    in steps, and the page's augmentation, learning rate, batch size and U-Net widths."""
    defaults = TrainingDefaults()
    length = TrainingLength.of(1, training_slices(data), defaults.batch_size).nearest(defaults.steps)
    return TrainingRequest(data, out, length.epochs, defaults.augmentation, defaults.learning_rate,
                           defaults.batch_size)


def train(request: TrainingRequest) -> tuple[float, float]:
    """Run the request as the page does: (Unix time of the start, seconds from start to the child's exit)."""
    job = TrainingJob(request)
    clock, started = time.time(), time.perf_counter()
    job.start()
    while job.running:
        time.sleep(POLL_SECONDS)
    seconds = time.perf_counter() - started
    if job.exit_code != 0:
        sys.exit(f"fedseg train failed ({job.exit_code}):\n{job.log_tail(20)}")
    return clock, seconds


def evaluate(model: Path, data: Path) -> dict[str, Any]:
    result = subprocess.run([sys.executable, "-m", "app.cli", "evaluate", "--model", str(model), "--data",
                             str(data), "--json"], capture_output=True, text=True, check=True)
    return json.loads(result.stdout)


def eta_errors(events: list[dict[str, Any]]) -> dict[float, float | None]:
    """(ETA - time left) / time left at the first step at or past each fraction of the run, the page's
    model fed the events one by one; None where it had no estimate yet."""
    end = next(event["time"] for event in events if event["kind"] == "finished")
    model, errors = TrainingRunModel(), {}
    for event in events:
        model.apply(event)
        if event["kind"] != "progress":
            continue
        for fraction in FRACTIONS:
            if fraction not in errors and model.fraction >= fraction:
                eta, left = model.eta_seconds, end - event["time"]
                errors[fraction] = None if eta is None or left <= 0 else (eta - left) / left
    return errors


def main() -> None:
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        os.environ[CACHE_DIR_ENVIRONMENT] = str(Path(tmp) / "cache")  # a first run: nothing cached yet
        started = time.perf_counter()
        workspace = prepare_demo_workspace(Path(tmp) / "workspace")
        demo_seconds = time.perf_counter() - started
        site = workspace.sites[SITE]
        request = default_request(site, Path(tmp) / "run")
        clock, wall = train(request)
        scores = evaluate(request.out / CHECKPOINT_NAME, site)
        events = list(read_events(request.out / EVENTS_NAME))
    load_after = os.getloadavg()[0]
    progress = [event for event in events if event["kind"] == "progress"]
    steps, first_eta = len(progress), progress[1]["time"] - clock  # the page's ETA needs two steps
    label_dice, mean_dice = scores["mean"]["dice"], scores["dice"]
    errors = eta_errors(events)
    print(f"demo workspace: {len(DEMO_SITES)} sites x {DEMO_CASES} cases made in {demo_seconds:.1f} s")
    widths = ",".join(map(str, request.channels))
    print(f"first training on the {SITE.upper()} site: {request.epochs} epochs = {steps} steps, batch "
          f"{request.batch_size}, lr {request.learning_rate:g}, widths {widths}, {request.augmentation}")
    print(f"wall {wall:.1f} s from Start to exit (target <= {TARGET_SECONDS:.0f} s); the first ETA "
          f"{first_eta:.1f} s after Start")
    print("test Dice: " + ", ".join(f"{name} {value:.3f}" for name, value in label_dice.items())
          + f"; mean {mean_dice:.3f} (target >= {TARGET_DICE})")
    print("ETA error: " + ", ".join(f"{fraction:.0%} " + ("—" if error is None else f"{error:+.0%}")
                                   for fraction, error in errors.items()))
    print(f"load average {load_before:.2f} -> {load_after:.2f} on {os.cpu_count()} CPUs")
    print(json.dumps({
        "benchmark": "first_training",
        "site": SITE,
        "cases": DEMO_CASES,
        "demo_seconds": round(demo_seconds, 2),
        "epochs": request.epochs,
        "steps": steps,
        "batch_size": request.batch_size,
        "learning_rate": request.learning_rate,
        "channels": list(request.channels),
        "wall_seconds": round(wall, 1),
        "first_eta_seconds": round(first_eta, 1),
        "label_dice": {name: round(value, 4) for name, value in label_dice.items()},
        "mean_dice": round(mean_dice, 4),
        "eta_error": {f"{fraction:.0%}": None if error is None else round(error, 3)
                      for fraction, error in errors.items()},
        "load_average": [round(load_before, 2), round(load_after, 2)],
        "cpus": os.cpu_count(),
        "target_dice": TARGET_DICE,
        "target_seconds": TARGET_SECONDS,
        "met": mean_dice >= TARGET_DICE and wall <= TARGET_SECONDS,
    }))


if __name__ == "__main__":
    main()
