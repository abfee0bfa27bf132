"""A demo round's wall time with homomorphically encrypted aggregation against without, in real processes.

Runs the federated part of `fedseg demo` with HE off and with HE on (`fedseg demo --he`: the sites
decrypt, check, weight, mask and encrypt, the server adds ciphertexts) in one run, on the same phantoms
and settings; with --repeats the pair runs again in the opposite order (off/on, on/off, ...) so that a
drifting machine load favours neither. Each run is a real SuperLink and one SuperNode per site on
127.0.0.1 with TLS: the demo's network, data and plan (which the server makes from the sites'
fingerprints); fewer rounds and local epochs than the demo, which makes the HE share of a round larger
than in the demo itself.

A round's wall time comes from the server's own round summaries (federation.round_costs: from the run's
plan or the previous round's checkpoint to this round's checkpoint), so starting the processes and the
fingerprint query before round 1 are not counted. Of that, "sites" is the slowest site's own round work
(scoring and local training, the `site-seconds` it reports) and "rest" everything else: the global model's
way to the sites (with HE, decrypting it), the replies' way back, with HE the upload query (the roster
of mask keys out; the masked, encrypted updates back), and the server's checks, sum and checkpoint. CPU
is the CPU time of every process a run started, start-up included: less sensitive to other work on a
shared machine, where single rounds' wall times vary by tens of percent; on Linux it is also split by
program when the run finishes (a flower-superexec counts the ClientApp or ServerApp processes it started
and that have exited), which shows where Flower spends it.

Target: HE round wall time <= 1.15x plaintext (issues 4 and 15). Last line: a JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from federation.demo import DemoSettings
from federation.demo.data import demo_datasets
from federation.demo.federated import EventCallback, run_federation
from federation.round_costs import round_summaries
from federation.server_run import EVENTS_NAME
from segmentation.datalist import DatasetIndex
from segmentation.events import read_events

TARGET_RATIO = 1.15
MODES = {"plaintext": False, "he": True}


def progress(mode: str) -> EventCallback:
    """Say on stderr when a round of the `mode` run is done."""
    def on_event(event: dict[str, Any]) -> None:
        if event["kind"] == "checkpoint":
            print(f"{mode}: round {event['round']} done", file=sys.stderr, flush=True)
    return on_event


def children_cpu_seconds() -> float:
    """User + system CPU seconds of this process's finished child processes (and theirs) so far."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def program_cpu_seconds() -> dict[str, float]:
    """CPU seconds of this process's running descendants by program, their exited children included; {}
    where there is no Linux /proc."""
    tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    processes: dict[int, tuple[int, str, float]] = {}  # pid -> parent, program, seconds
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            stat = (entry / "stat").read_text()
            argv = [Path(arg).name for arg in (entry / "cmdline").read_bytes().decode().split("\0") if arg]
        except (OSError, UnicodeDecodeError):
            continue  # gone meanwhile, or not ours to read
        fields = stat[stat.rfind(")") + 2:].split()  # after "pid (name) ": state, ppid, ...
        program = argv[1] if len(argv) > 1 and argv[0].startswith("python") else (argv or ["(exited)"])[0]
        processes[int(entry.name)] = (int(fields[1]), program, sum(map(int, fields[11:15])) / tick)
    seconds: dict[str, float] = {}
    parents = [os.getpid()]
    while parents:
        children = [pid for pid, (parent, _, _) in processes.items() if parent in parents]
        for pid in children:
            _, program, cpu = processes[pid]
            seconds[program] = seconds.get(program, 0.0) + cpu
        parents = children
    return seconds


def run_once(folder: Path, settings: DemoSettings, datasets: Mapping[str, DatasetIndex], mode: str
             ) -> dict[str, Any]:
    """One federated run: per training round its wall seconds and the slowest site's round work, and the
    CPU seconds of its processes."""
    programs: dict[str, float] = {}
    report = progress(mode)

    def on_event(event: dict[str, Any]) -> None:
        report(event)
        if event["kind"] == "finished":
            programs.update(program_cpu_seconds())

    cpu = children_cpu_seconds()
    config = run_federation(folder, replace(settings, he=MODES[mode]), datasets, on_event)
    cpu = children_cpu_seconds() - cpu
    rounds = [{"round": summary.round, "wall_s": summary.wall_s, "sites_s": summary.work_s or 0.0}
              for summary in round_summaries(read_events(config.run_dir / EVENTS_NAME))]
    return {"mode": mode, "cpu_s": cpu, "program_cpu_s": programs, "rounds": rounds}


def measure(out: Path, settings: DemoSettings, repeats: int) -> list[dict[str, Any]]:
    """Every run, HE off and on `repeats` times each, in alternating order."""
    datasets = demo_datasets(out / "data", settings)
    runs = []
    for repeat in range(1, repeats + 1):
        for mode in list(MODES)[:: 1 if repeat % 2 else -1]:
            runs.append(run_once(out / f"{mode}-{repeat}", settings, datasets, mode))
    return runs


def totals(runs: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Per mode: the wall and sites' seconds of all its training rounds, and its processes' CPU seconds."""
    return {mode: {"wall_s": sum(r["wall_s"] for run in runs if run["mode"] == mode for r in run["rounds"]),
                   "sites_s": sum(r["sites_s"] for run in runs if run["mode"] == mode for r in run["rounds"]),
                   "cpu_s": sum(run["cpu_s"] for run in runs if run["mode"] == mode)}
            for mode in MODES}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, help="work folder (default: a temporary one)")
    parser.add_argument("--rounds", type=int, default=2, help="rounds per run (default 2)")
    parser.add_argument("--local-epochs", type=int, default=1, help="local epochs per round (default 1)")
    parser.add_argument("--repeats", type=int, default=1, help="runs per mode, alternating order (default 1)")
    args = parser.parse_args()
    settings = DemoSettings(rounds=args.rounds, local_epochs=args.local_epochs)
    with tempfile.TemporaryDirectory(prefix="fedseg-bench-") as temporary:
        runs = measure(args.out or Path(temporary), settings, args.repeats)
    print(f"{'run':>12}  {'round wall s (sites + rest)':<60}  {'CPU s':>6}")
    for number, run in enumerate(runs):
        walls = ", ".join(_split(row) for row in run["rounds"])
        print(f"{run['mode']:>10} {number // 2 + 1}  {walls:<60}  {run['cpu_s']:6.0f}")
        print(" " * 14 + "CPU s by program: " + ", ".join(f"{program} {seconds:.1f}" for program, seconds
                                                         in sorted(run["program_cpu_s"].items())))
    total = totals(runs)
    plain, he = total["plaintext"], total["he"]
    ratio = he["wall_s"] / plain["wall_s"]
    print(f"all training rounds: {_split(plain)} plaintext, {_split(he)} with HE: {ratio:.2f}x "
          f"(target <= {TARGET_RATIO:.2f}x); CPU of the runs' processes {he['cpu_s'] / plain['cpu_s']:.2f}x")
    demo = {"sites": list(settings.sites), "rounds": settings.rounds, "local_epochs": settings.local_epochs,
            "train_cases": settings.train_cases, "volume_size": settings.volume_size,
            "channels": list(settings.channels), "repeats": args.repeats}
    print(json.dumps({"benchmark": "he_round_time", "settings": demo, "runs": runs, "total": total,
                      "ratio": ratio, "cpu_ratio": he["cpu_s"] / plain["cpu_s"],
                      "target_ratio": TARGET_RATIO, "met": ratio <= TARGET_RATIO}))
    return 0


def _split(row: Mapping[str, float]) -> str:
    """'wall (sites + rest)' in seconds."""
    return f"{row['wall_s']:.1f} ({row['sites_s']:.1f} + {row['wall_s'] - row['sites_s']:.1f})"


if __name__ == "__main__":
    sys.exit(main())
