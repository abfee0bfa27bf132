"""Where a demo round's wall time goes: the sites' training and evaluation against Flower's overhead.

Runs the federated part of `fedseg demo` (real SuperLink and SuperNodes on 127.0.0.1, TLS) and reads
the run's own event files. Before round 1 the server plans: it asks every site for its fingerprint and
makes the plan (the run's "started" to its "plan" event), reported apart as the planning time. A training
round's wall time runs from the end of the previous round (or the plan) to the server's checkpoint of
this round. The sites' work in it is each site's
train_round, from its "started" to its "finished" event (scoring the received model, the local epochs,
scoring again); the sites work in parallel, so the round's compute is the slowest site's. Everything
else is overhead: a ClientApp process per message (Python and the model code's imports), Flower's
polling and transport, and the server's validation, averaging, metrics and checkpoint.

Bytes sent per site and round: Flower's serialized objects of the site's reply (weights packed as the
sites send them, metrics, name), before HTTP and TLS framing.

Target: compute share >= 0.80 over the training rounds. Last line: a JSON object.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from collections import defaultdict
from pathlib import Path
from typing import Any

from flwr.app import Array, ArrayRecord, ConfigRecord, MetricRecord, RecordDict
from flwr.supercore.inflatable.inflatable_object import get_all_nested_objects

from federation.demo import DemoSettings
from federation.demo.data import demo_datasets
from federation.demo.federated import run_federation, site_event_file
from federation.packed import pack
from federation.server_run import EVENTS_NAME, METRICS_NAME, read_metrics
from federation.site_history import SITE_NAME_KEY, TRAIN
from segmentation.checkpoint import load_checkpoint
from segmentation.events import read_events
from segmentation.settings import CHECKPOINT_NAME

TARGET_SHARE = 0.80


def planning_seconds(server_events: list[dict[str, Any]]) -> float:
    """Seconds from the run's start to its plan: the fingerprint query and the planning."""
    started = next(event["time"] for event in server_events if event["kind"] == "started")
    return next(event["time"] for event in server_events if event["kind"] == "plan") - started


def round_walls(server_events: list[dict[str, Any]]) -> dict[int, float]:
    """Seconds of each training round, from the server's plan/checkpoint events."""
    start = next(event["time"] for event in server_events if event["kind"] == "plan")
    walls = {}
    for event in server_events:
        if event["kind"] == "checkpoint":
            walls[event["round"]] = event["time"] - start
            start = event["time"]
    return walls


def site_compute(site_events: list[dict[str, Any]]) -> dict[int, float]:
    """Seconds of a site's train_round per round, from its started/finished events."""
    started: dict[int, float] = {}
    seconds = {}
    for event in site_events:
        if event.get("round") is None:
            continue
        if event["kind"] == "started":
            started[event["round"]] = event["time"]
        elif event["kind"] == "finished" and event["round"] in started:
            seconds[event["round"]] = event["time"] - started[event["round"]]
    return seconds


def reply_bytes(arrays: ArrayRecord, site: str, metrics: dict[str, Any]) -> int:
    """Serialized size of a train reply: the model's arrays, the site's metrics and its name."""
    numbers = {key: value for key, value in metrics.items() if isinstance(value, (int, float))}
    content = RecordDict({"arrays": pack(arrays), "metrics": MetricRecord(numbers),
                          "site": ConfigRecord({SITE_NAME_KEY: site})})
    return sum(len(item.deflate()) for item in get_all_nested_objects(content).values())


def measure(out: Path, settings: DemoSettings) -> dict[str, Any]:
    datasets = demo_datasets(out / "data", settings)
    config = run_federation(out / "federation", settings, datasets,
                            on_event=lambda event: event["kind"] == "checkpoint"
                            and print(f"round {event['round']} done", file=sys.stderr, flush=True))
    server_events = list(read_events(config.run_dir / EVENTS_NAME))
    walls = round_walls(server_events)
    compute = {site: site_compute(list(read_events(site_event_file(out / "federation", site))))
               for site in datasets}
    model = load_checkpoint(config.run_dir / CHECKPOINT_NAME)  # the replies' arrays have its shapes
    arrays = ArrayRecord({name: Array(tensor.numpy()) for name, tensor in model.state_dict.items()})
    sent: dict[str, dict[int, int]] = defaultdict(dict)
    for record in read_metrics(config.run_dir / METRICS_NAME):
        if record.phase == TRAIN and record.accepted:
            metrics = {"num-examples": record.num_examples, **record.metrics}
            sent[record.site][record.round] = reply_bytes(arrays, record.site, metrics)
    rounds = []
    for number, wall in sorted(walls.items()):
        slowest = max(compute[site].get(number, 0.0) for site in datasets)
        rounds.append({"round": number, "wall_s": wall, "compute_s": slowest, "share": slowest / wall,
                       "site_compute_s": {site: compute[site].get(number) for site in datasets},
                       "bytes_sent": {site: sent[site].get(number) for site in datasets}})
    share = sum(r["compute_s"] for r in rounds) / sum(r["wall_s"] for r in rounds)
    return {"plan": model.plan.describe(), "planning_s": planning_seconds(server_events), "rounds": rounds,
            "compute_share": share}


def _number(value: float | None, digits: int, scale: float = 1.0) -> str:
    return "-" if value is None else f"{value / scale:.{digits}f}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, help="work folder (default: a temporary one)")
    parser.add_argument("--rounds", type=int, help="rounds (default: the demo's)")
    args = parser.parse_args()
    settings = DemoSettings(**({"rounds": args.rounds} if args.rounds else {}))
    with tempfile.TemporaryDirectory(prefix="fedseg-bench-") as temporary:
        result = measure(args.out or Path(temporary), settings)
    print(f"plan: {result['plan']}, from the sites' fingerprints in {result['planning_s']:.1f} s")
    print(f"{'round':>5}  {'wall s':>7}  {'compute s':>9}  {'share':>5}  per site: compute s / KiB sent")
    for row in result["rounds"]:
        sites = "  ".join(f"{site}: {_number(row['site_compute_s'][site], 1)} / "
                          f"{_number(row['bytes_sent'][site], 0, 1024)}" for site in row["site_compute_s"])
        times = f"{row['wall_s']:7.1f}  {row['compute_s']:9.1f}  {row['share']:5.2f}"
        print(f"{row['round']:>5}  {times}  {sites}")
    walls = [row["wall_s"] for row in result["rounds"]]
    print(f"mean round {statistics.fmean(walls):.1f} s; sites' training + evaluation share of the round wall "
          f"time {result['compute_share']:.2f} (target >= {TARGET_SHARE:.2f})")
    demo = {"rounds": settings.rounds, "local_epochs": settings.local_epochs, "sites": list(settings.sites)}
    print(json.dumps({"benchmark": "federation_round", "settings": demo, **result,
                      "target_share": TARGET_SHARE, "met": result["compute_share"] >= TARGET_SHARE}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
