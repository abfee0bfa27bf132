"""`fedseg site --config site.toml`: join the federation with this site's data, headless.

Starts flower-supernode with the site's node config (name, modality, data folder, event file) and
follows the site's event file: a progress bar while it trains, a line per round. The SuperNode waits
for the server and reconnects after the server restarts; it is started again if the server lost it.
Ctrl-C (or SIGTERM) leaves the federation.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from app.commands.server import RoundTable, StopSignals


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "site", help="join the federation as a site (a Flower SuperNode on this site's data)",
        description="Start a Flower SuperNode for site.toml and take part in the server's runs; only model "
                    "updates and numbers leave the site. Ctrl-C leaves the federation.",
    )
    parser.add_argument("--config", required=True, type=Path, metavar="SITE_TOML",
                        help="the site's settings (site.toml)")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from app.progress import EventProgressBar
    from federation.config import load_site_config
    from federation.launch import EventTail, FederationSite

    config = load_site_config(args.config)
    bar = EventProgressBar()
    report = SiteReport(config.name)
    with StopSignals() as stop, FederationSite(config) as site:
        tail = EventTail(config.event_file)
        site.start()
        tls = "TLS" if config.tls_enabled else "no TLS"
        print(f"site {config.name!r} ({config.modality}) joins {config.server_address} ({tls}); "
              f"events: {config.event_file}; Ctrl-C leaves")
        if config.he_fingerprint is not None:
            print(f"homomorphic encryption on: HE key {config.he_fingerprint} (the server shows the same)")
        connected = False
        while not stop():
            site.supervise()
            if not connected and site.connected():
                connected = True
                print("connected; waiting for the server's rounds")
            for event in tail:
                bar(event)
                report.add(event)
            time.sleep(0.5)
        bar.close()
    print(f"site {config.name!r} left the federation", file=sys.stderr)
    return 0


class SiteReport:
    """One line per round this site trained or scored, and every site's numbers as the server shares them."""

    def __init__(self, site: str) -> None:
        self.site = site
        self.table = RoundTable(sys.stdout)

    def add(self, event: dict[str, Any]) -> None:
        kind = event.get("kind")
        if kind == "finished" and "round" in event:
            metrics = event.get("metrics", {})
            before, after = metrics.get("before/dice"), metrics.get("after/dice")
            line = f"round {event['round']}: trained, loss {metrics.get('train-loss', float('nan')):.4f}"
            if before is not None and after is not None:
                line += f", Dice {before:.3f} (global) -> {after:.3f} (local)"
            print(line, flush=True)
        elif kind == "evaluation" and event.get("phase") == "evaluate":
            dice = event.get("metrics", {}).get("dice", float("nan"))
            print(f"round {event.get('round')}: the global model scores Dice {dice:.3f} here", flush=True)
        elif kind == "error":
            print(f"round {event.get('round')}: failed here ({event.get('message')}); the server only sees "
                  f"error code {event.get('code')}", flush=True)
        elif kind == "site-metrics":
            self.table.add(event)
