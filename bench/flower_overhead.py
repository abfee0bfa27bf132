"""Flower's per-round overhead, the project's fast path against stock Flower, side by side in one run.

A no-op model (bench/overhead_app.py: the demo model's arrays go to every site and straight back) runs
through a real SuperLink and the demo's three SuperNodes on 127.0.0.1 with TLS, twice:
- fast: what `fedseg server` and `fedseg site` run. Each SuperNode runs with `--isolation process` and its
  fixed waits shortened, and a site worker serves its ClientApp tasks (federation.flower_internals); the
  server pulls replies with federation.prompt_grid.PromptGrid (packed arrays, short polls).
- stock: Flower's defaults. A flwr-clientapp process per message (the SuperExec's 1 s task poll), the
  SuperNode's 3 s idle sleep, and Flower's own send_and_receive (3 s between pulls, an object per array).
A round's wall time is the ServerApp's, from sending the messages to the last reply; the sites do no
work, so all of it is overhead. Round 1 also pays the first start (a flwr-clientapp's imports; the
worker loaded its app beforehand) and is reported apart; the target is on the mean of the other rounds.

Target: round_overhead_s <= 1.5. Last line: a JSON object.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import statistics
import sys
import tempfile
import time
import tomllib
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import tomli_w

from federation.certificates import default_names, existing_or_new_tls_files
from federation.demo import DemoSettings
from federation.launch import write_app_project
from federation.processes import (
    FlowerCli,
    SuperLinkSettings,
    SuperNodeSettings,
    free_port,
    start_site_worker,
    start_superlink,
    start_supernode,
    write_private_file,
)
from federation.server_run import NETWORK_DIMS
from segmentation.network import build_network
from segmentation.settings import NetworkConfig

TARGET_SECONDS = 1.5
APP = Path(__file__).with_name("overhead_app.py")
STOCK_POLL = {"FLWR_SUPEREXEC_TASK_POLL_INTERVAL": "1.0"}  # Flower's default, which FedSeg shortens


def demo_shapes() -> dict[str, list[int]]:
    """The shapes of the demo model's arrays, by name."""
    network = NetworkConfig(spatial_dims=NETWORK_DIMS, out_channels=3, channels=DemoSettings().channels)
    return {name: list(tensor.shape) for name, tensor in build_network(network).state_dict().items()}


def app_project(folder: Path, run_config: dict[str, Any]) -> Path:
    """The Flower app project with bench/overhead_app.py's ServerApp and ClientApp and this run config."""
    folder = write_app_project(folder)
    pyproject = folder / "pyproject.toml"
    project = tomllib.loads(pyproject.read_text(encoding="utf-8"))
    app = project["tool"]["flwr"]["app"]
    app["components"] = {"serverapp": "overhead_app:server", "clientapp": "overhead_app:client"}
    app["config"] = run_config
    pyproject.write_text(tomli_w.dumps(project), encoding="utf-8")
    shutil.copy(APP, folder)
    return folder


def measure(folder: Path, fast: bool, rounds: int, nodes: int, shapes: dict[str, list[int]]) -> list[float]:
    """Each round's wall time, as the ServerApp measured it."""
    tls = existing_or_new_tls_files(folder / "tls", default_names("127.0.0.1"))
    link = SuperLinkSettings("127.0.0.1", free_port(), folder / "superlink", tls)
    out = folder / "rounds.json"
    with ExitStack() as stack:
        stack.callback(lambda: superlink.stop())
        superlink = start_superlink(link)
        for index in range(nodes):
            state_dir = folder / f"site-{index}"
            site = SuperNodeSettings(link.local_address, free_port(), {}, state_dir, tls.ca_certificate,
                                     task_secret=state_dir / "task-secret" if fast else None)
            environment = {"PYTHONPATH": str(APP.parent)}
            if fast:
                write_private_file(state_dir / "task-secret", f"bench-{index}".encode() * 4)
                worker = start_site_worker(site, environment, client_app="overhead_app:client")
                stack.callback(worker.stop)
            supernode = start_supernode(site, environment if fast else {**environment, **STOCK_POLL})
            stack.callback(supernode.stop)
        cli = FlowerCli(link.flwr_home, link.local_address, tls.ca_certificate)
        run_config = {"rounds": rounds, "nodes": nodes, "fast": fast, "shapes": json.dumps(shapes),
                      "out": str(out)}
        run_id = cli.submit(app_project(folder / "app", run_config), run_config)
        deadline = time.monotonic() + 120 + 30 * rounds
        while not out.exists():
            status = cli.status(run_id)
            if status.startswith("finished") or time.monotonic() > deadline:
                raise RuntimeError(f"the {'fast' if fast else 'stock'} run ended without its round times "
                                   f"({status}); logs in {folder}")
            time.sleep(0.5)
    return json.loads(out.read_text(encoding="utf-8"))


def summary(walls: list[float]) -> dict[str, Any]:
    later = walls[1:]
    return {"first_round_s": walls[0], "round_overhead_s": statistics.fmean(later),
            "median_s": statistics.median(later), "max_s": max(later), "rounds_s": walls}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=8, help="rounds per run (default 8)")
    parser.add_argument("--out", type=Path, help="work folder with the logs (default: a temporary one)")
    args = parser.parse_args()
    shapes = demo_shapes()
    nodes = len(DemoSettings().sites)
    megabytes = sum(4 * math.prod(shape) for shape in shapes.values()) / 2**20
    with tempfile.TemporaryDirectory(prefix="fedseg-overhead-") as temporary:
        folder = args.out or Path(temporary)
        fast = summary(measure(folder / "fast", True, args.rounds, nodes, shapes))
        stock = summary(measure(folder / "stock", False, args.rounds, nodes, shapes))
    print(f"{nodes} sites, the demo model's {len(shapes)} arrays ({megabytes:.1f} MiB) each way, "
          f"{args.rounds} rounds")
    print(f"{'':6} {'round 1 s':>9} {'mean s':>7} {'median s':>8} {'max s':>6}  (rounds 2..{args.rounds})")
    for name, row in (("fast", fast), ("stock", stock)):
        print(f"{name:6} {row['first_round_s']:9.2f} {row['round_overhead_s']:7.2f} {row['median_s']:8.2f} "
              f"{row['max_s']:6.2f}")
    ratio = stock["round_overhead_s"] / fast["round_overhead_s"]
    print(f"per-round overhead {fast['round_overhead_s']:.2f} s against stock Flower's "
          f"{stock['round_overhead_s']:.2f} s ({ratio:.1f}x less; target <= {TARGET_SECONDS} s)")
    print(json.dumps({"benchmark": "flower_overhead", "sites": nodes, "rounds": args.rounds,
                      "model_mib": round(megabytes, 2), "round_overhead_s": fast["round_overhead_s"],
                      "stock_round_overhead_s": stock["round_overhead_s"], "fast": fast, "stock": stock,
                      "target_s": TARGET_SECONDS, "met": fast["round_overhead_s"] <= TARGET_SECONDS}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
