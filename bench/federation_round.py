"""Where a demo round's wall time goes: the sites' training and scoring against the overhead.

Runs the federated part of `fedseg demo` at its defaults (real SuperLink and SuperNodes on 127.0.0.1,
TLS, the fast path of federation/flower_internals.py) and reads what the server recorded about every
training round (federation.round_costs: each round's checkpoint event). A round's wall time runs from the
end of the previous round (or the plan) to its checkpoint; the sites' work in it is the slowest site's
own seconds (scoring the received model, the local epochs, scoring again), as each site reports them;
the rest is overhead: Flower's transport and polling and the server's validation, averaging, metrics and
checkpoint. Before round 1 the server plans: it asks every site for its fingerprint (the run's "started"
to its "plan" event), reported apart. Array bytes: the packed weights each way per site and round.

Target: mean overhead <= 1.5 s a round (bench/flower_overhead.py measures it with a no-op model, against
stock Flower). Last line: a JSON object.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

from federation.demo import DemoSettings
from federation.demo.data import demo_datasets
from federation.demo.federated import run_federation
from federation.round_costs import round_summaries
from federation.server_run import EVENTS_NAME
from segmentation.events import read_events

TARGET_OVERHEAD_S = 1.5


def planning_seconds(server_events: list[dict[str, Any]]) -> float:
    """Seconds from the run's start to its plan: the fingerprint query and the planning."""
    started = next(event["time"] for event in server_events if event["kind"] == "started")
    return next(event["time"] for event in server_events if event["kind"] == "plan") - started


def measure(out: Path, settings: DemoSettings) -> dict[str, Any]:
    datasets = demo_datasets(out / "data", settings)
    config = run_federation(out / "federation", settings, datasets)
    server_events = list(read_events(config.run_dir / EVENTS_NAME))
    rounds = [summary.to_dict() for summary in round_summaries(server_events)]
    overheads = [row["overhead_s"] for row in rounds if row["overhead_s"] is not None]
    wall = sum(row["wall_s"] for row in rounds)
    return {"planning_s": planning_seconds(server_events), "rounds": rounds,
            "mean_wall_s": wall / len(rounds), "mean_overhead_s": statistics.fmean(overheads),
            "median_overhead_s": statistics.median(overheads),
            "compute_share": sum(row["work_s"] or 0.0 for row in rounds) / wall}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, help="work folder (default: a temporary one)")
    parser.add_argument("--rounds", type=int, help="rounds (default: the demo's)")
    args = parser.parse_args()
    settings = DemoSettings(**({"rounds": args.rounds} if args.rounds else {}))
    with tempfile.TemporaryDirectory(prefix="fedseg-bench-") as temporary:
        result = measure(args.out or Path(temporary), settings)
    rounds = result["rounds"]
    print(f"{len(rounds)} rounds of {settings.local_epochs} local epoch(s), {len(settings.sites)} sites; "
          f"planning {result['planning_s']:.1f} s")
    print(f"{'round':>5}  {'wall s':>7}  {'work s':>7}  {'overhead s':>10}  per site: KiB in/out")
    for row in rounds[:3] + rounds[-2:] if len(rounds) > 5 else rounds:
        sites = "  ".join(f"{site['site']}: {site['array_bytes_received'] / 1024:.0f}/"
                          f"{site['array_bytes_sent'] / 1024:.0f}" for site in row["sites"]
                          if site["array_bytes_received"] is not None)
        work = "-" if row["work_s"] is None else f"{row['work_s']:.1f}"
        overhead = "-" if row["overhead_s"] is None else f"{row['overhead_s']:.2f}"
        print(f"{row['round']:>5}  {row['wall_s']:7.1f}  {work:>7}  {overhead:>10}  {sites}")
    print(f"mean round {result['mean_wall_s']:.2f} s, overhead mean {result['mean_overhead_s']:.2f} s "
          f"(median {result['median_overhead_s']:.2f} s; target <= {TARGET_OVERHEAD_S} s), sites' work "
          f"{result['compute_share']:.2f} of the wall time")
    demo = {"rounds": settings.rounds, "local_epochs": settings.local_epochs, "sites": list(settings.sites)}
    print(json.dumps({"benchmark": "federation_round", "settings": demo, **result,
                      "target_overhead_s": TARGET_OVERHEAD_S,
                      "met": result["mean_overhead_s"] <= TARGET_OVERHEAD_S}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
