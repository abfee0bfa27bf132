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
from typing import TYPE_CHECKING, Any

from app.commands.server import RoundTable, StopSignals

if TYPE_CHECKING:
    from federation.config import SiteConfig
    from federation.joining import JoinError
    from federation.launch import FederationSite
    from segmentation.events import EventWriter


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
    from segmentation.events import EventWriter

    config = load_site_config(args.config)
    bar = EventProgressBar()
    report = SiteReport(config.name)
    with (StopSignals() as stop, FederationSite(config) as site,
          EventWriter(config.event_file, "site") as events):
        tail = EventTail(config.event_file)
        site.start()
        tls = "TLS" if config.tls_enabled else "no TLS: unencrypted, for testing only"
        leave = "; Ctrl-C leaves" if sys.stdin.isatty() else ""  # a workbench's child has its own Leave
        print(f"site {config.name!r} ({config.modality}) joins {config.server_address} ({tls}); "
              f"events: {config.event_file}{leave}")
        if config.he_fingerprint is not None:
            print(f"homomorphic encryption on: HE key {config.he_fingerprint} (the server shows the same)")
            masking = config.masking
            peers = (f"peers pinned to the keys in {masking.peer_keys}" if masking.peer_keys is not None
                     else "peers' keys as the server relays them ([he] peer_keys pins them)")
            print(f"updates masked pairwise with at least {masking.min_sites} sites; {peers}")
        link = Link(config, site, events)
        while not stop():
            link.check()
            for event in tail:
                bar(event)
                report.add(event)
            time.sleep(0.5)
        bar.close()
    print(f"site {config.name!r} left the federation", file=sys.stderr)
    return 0


class Link:
    """The site's connection to the server, told as "connection" events: connecting, connected, or
    failed with the reason (federation.joining) when the first join does not happen within the join
    timeout or the SuperNode gives up; after a server restart the site waits again without a limit."""

    def __init__(self, config: SiteConfig, site: FederationSite, events: EventWriter) -> None:
        self.config, self.site, self.events = config, site, events
        self.started = time.monotonic()
        self.connected = False
        self.restarts = site.restarts
        events.emit("connection", state="connecting", timeout=config.join_timeout)

    def check(self) -> None:
        from federation.joining import diagnose
        from federation.processes import FlowerProcessError

        try:
            self.site.supervise()
        except FlowerProcessError:
            self._fail(diagnose(self.config.server_address, self.config.tls_enabled, self._log()))
        if self.site.restarts != self.restarts:
            self.restarts, self.connected = self.site.restarts, False
            self.events.emit("connection", state="connecting")
        if not self.connected and self.site.connected():
            self.connected = True
            self.events.emit("connection", state="connected")
            print("connected; waiting for the server's rounds", flush=True)
        waited = time.monotonic() - self.started
        timeout = self.config.join_timeout
        if not self.connected and not self.site.restarts and timeout and waited > timeout:
            self._fail(diagnose(self.config.server_address, self.config.tls_enabled, self._log(), waited))

    def _log(self) -> str:
        return self.site.supernode.log_tail(40) if self.site.supernode is not None else ""

    def _fail(self, error: JoinError) -> None:
        self.events.emit("connection", state="failed", reason=error.reason, message=str(error))
        raise error


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
