"""`fedseg server`: run the federation's server; `fedseg server status`: its per-site, per-round table and
what each round cost (wall time, overhead, every site's part and array bytes).

`fedseg server --config server.toml [--resume]` starts a SuperLink (TLS, a database in the run folder,
SuperNode authentication when sites' keys are listed), submits the run and prints a row per site and
round as the rounds complete. Ctrl-C (or SIGTERM) stops the run and the SuperLink and exits 130; the
run continues later with --resume from its last checkpointed round.
"""

from __future__ import annotations

import argparse
import json
import math
import shlex
import signal
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

if TYPE_CHECKING:
    from federation.round_costs import RoundSummary

EXIT_INTERRUPTED = 130
_STATUS_POLL_SECONDS = 10.0
_COLUMNS = (("round", 5), ("phase", 8), ("site", 20), ("status", 16), ("examples", 8), ("loss", 7),
            ("Dice before", 11), ("Dice after", 10), ("Dice", 6), ("epsilon", 7))


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "server", help="run the federation server (SuperLink + ServerApp), or show a run's status",
        description="Start a Flower SuperLink for server.toml, submit the federated run and print each "
                    "site's numbers per round. Ctrl-C stops cleanly; --resume continues the run folder's "
                    "run.",
    )
    parser.add_argument("--config", type=Path, metavar="SERVER_TOML",
                        help="the server's settings (server.toml)")
    parser.add_argument("--resume", action="store_true",
                        help="continue the run in the run folder from its last checkpointed round")
    parser.set_defaults(handler=run_server)
    actions = parser.add_subparsers(title="actions", metavar="[status]")
    status = actions.add_parser(
        "status", help="the per-site, per-round table of a running or finished run",
        description="Print the per-site, per-round table of a run folder (its metrics.jsonl) and what each "
                    "round cost: wall time, overhead, each site's part and array bytes (its events.jsonl).",
    )
    where = status.add_mutually_exclusive_group()
    where.add_argument("--run", type=Path, metavar="DIR", help="the run folder (default: runs/server)")
    where.add_argument("--config", dest="status_config", type=Path, metavar="SERVER_TOML",
                       help="read the run folder from server.toml")
    status.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    status.set_defaults(handler=run_status)


# -- fedseg server ---------------------------------------------------------------------------------

def flower_cli_hint(flwr_home: Path, run_id: int) -> str:
    """How an operator reaches the run with Flower's own CLI: the server's Flower home names the SuperLink
    connection (with its CA), so stock `flwr ls` and `flwr log` work against it."""
    from federation.processes import CONNECTION_NAME

    home = shlex.quote(str(flwr_home))
    return (f"Flower's own CLI: FLWR_HOME={home} flwr ls {CONNECTION_NAME}  "
            f"(log: FLWR_HOME={home} flwr log {run_id} {CONNECTION_NAME})")


def run_server(args: argparse.Namespace) -> int:
    from federation.config import load_server_config
    from federation.launch import EventTail, FederationServer, check_run_folder
    from segmentation.errors import ConfigError

    if args.config is None:
        raise ConfigError("give --config server.toml (or use `fedseg server status`)")
    config = load_server_config(args.config)
    check_run_folder(config, args.resume)
    table = RoundTable(sys.stdout)
    with StopSignals() as stop, FederationServer(config) as server:
        tls = "TLS" if server.tls else "no TLS"
        print(f"starting the SuperLink on {config.host}:{config.fleet_port} ({tls}); "
              f"run folder {config.run_dir}")
        if config.he.enabled:
            print(f"homomorphic encryption on: HE key {config.he.fingerprint} (public context; every site "
                  "must show the same key)")
        server.start()
        if stop():
            return EXIT_INTERRUPTED
        if server.tls is not None and config.tls.generate:
            print(f"sites trust this CA certificate: {server.tls.ca_certificate}")
        tail = EventTail(server.events_path)
        run_id = server.submit(resume=args.resume)
        print(f"run {run_id} submitted; it starts when {config.federation.min_sites} site(s) are connected")
        print(flower_cli_hint(server.settings.flwr_home, run_id), flush=True)
        return _follow(server, tail, table, stop)


def _follow(server, tail, table: RoundTable, stop: StopSignals) -> int:
    """Print the run's events until it finishes, fails or a stop is requested."""
    from federation.processes import FlowerProcessError

    next_check = time.monotonic() + _STATUS_POLL_SECONDS
    while not stop():
        if (outcome := _consume(server, tail, table)) is not None:
            return outcome
        server.check_alive()
        if time.monotonic() >= next_check:
            next_check = time.monotonic() + _STATUS_POLL_SECONDS
            status = server.status()
            if status.startswith("finished"):
                if (outcome := _consume(server, tail, table)) is not None:  # a finish racing the check
                    return outcome
                raise FlowerProcessError(f"the run ended as {status} (logs: {server.settings.state_dir})")
        time.sleep(0.5)
    print("stopping the run and the SuperLink (continue later with --resume)", file=sys.stderr)
    return EXIT_INTERRUPTED


def _consume(server, tail, table: RoundTable) -> int | None:
    """Print the new events; 0 once the run finished, None while it runs; a failure raises."""
    from federation.processes import FlowerProcessError

    for event in tail:
        table.add(event)
        if event["kind"] == "finished":
            if server.config.he.enabled:
                print(f"run finished; encrypted global model: {server.config.run_dir / 'model.he'} (the "
                      "sites keep it decrypted as global-model.pt)")
            else:
                print(f"run finished; global model: {server.config.run_dir / 'model.pt'}")
            return 0
        if event["kind"] == "error":
            raise FlowerProcessError(f"the run failed: {event.get('message', 'see the SuperLink log')}")
    return None


class StopSignals:
    """SIGINT and SIGTERM ask for a clean stop (a flag), so child processes are stopped in order; a
    second signal interrupts at once."""

    def __init__(self) -> None:
        self.requested = False
        self._previous: dict[int, Any] = {}

    def _handle(self, number: int, frame: object) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def __call__(self) -> bool:
        return self.requested

    def __enter__(self) -> StopSignals:
        for number in (signal.SIGINT, signal.SIGTERM):
            self._previous[number] = signal.signal(number, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for number, handler in self._previous.items():
            signal.signal(number, handler)


# -- the table -------------------------------------------------------------------------------------

def _number(value: Any, digits: int) -> str:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return ""
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def table_row(record: dict[str, Any]) -> str:
    """One site's numbers in one round and phase (a metrics.jsonl record or a site-metrics event)."""
    metrics = record.get("metrics") or {}
    cells = (
        str(record["round"]), record["phase"], record["site"], record["status"],
        _number(record.get("num_examples"), 0), _number(metrics.get("train-loss"), 4),
        _number(metrics.get("before/dice"), 3), _number(metrics.get("after/dice"), 3),
        _number(metrics.get("dice"), 3), _number(metrics.get("epsilon"), 2),  # spent so far, DP sites only
    )
    return _line(cells)


def _line(cells) -> str:
    parts = []
    for (name, width), cell in zip(_COLUMNS, cells, strict=True):
        text_left = name in ("phase", "site", "status")
        parts.append(str(cell).ljust(width) if text_left else str(cell).rjust(width))
    return "  ".join(parts).rstrip()


def table_header() -> str:
    header = _line([name for name, _ in _COLUMNS])
    return header + "\n" + "-" * len(header)


class RoundTable:
    """Prints the header once, then a row per site-metrics event, and a line per aggregated round."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.header_printed = False

    def add(self, event: dict[str, Any]) -> None:
        kind = event.get("kind")
        if kind == "site-metrics":
            if not self.header_printed:
                print(table_header(), file=self.stream)
                self.header_printed = True
            print(table_row(event), file=self.stream, flush=True)
        elif kind == "started":
            done = event.get("round", 0)
            resumed = f", continuing after round {done}" if done else ""
            print(f"run started: {event.get('rounds')} rounds{resumed}", file=self.stream, flush=True)
        elif kind == "checkpoint":
            print(f"round {event['round']} checkpointed{_cost(event)}", file=self.stream, flush=True)
        elif kind == "plan":
            print(plan_summary(event), file=self.stream, flush=True)


def _cost(event: dict[str, Any]) -> str:
    """' in 12.3 s (overhead 1.2 s)' of a checkpoint event with a round summary, else ''."""
    from federation.round_costs import SUMMARY_FIELD, RoundSummary

    summary = RoundSummary.from_dict(event.get(SUMMARY_FIELD))
    if summary is None:
        return ""
    overhead = "unknown" if summary.overhead_s is None else f"{summary.overhead_s:.1f} s"
    return f" in {summary.wall_s:.1f} s (overhead {overhead})"


def plan_summary(event: dict[str, Any]) -> str:
    """'plan: ...' of a plan event, in the words the workbench's pages use (app.models.federation)."""
    from app.models.federation import plan_in_force

    plan = plan_in_force({**event, "kind": "plan"})
    return f"plan: {plan.line()}" if plan is not None else "plan: (the plan event names no plan)"


# -- fedseg server status --------------------------------------------------------------------------

def run_status(args: argparse.Namespace) -> int:
    from federation.round_costs import round_summaries
    from federation.server_run import EVENTS_NAME, METRICS_NAME, read_metrics
    from segmentation.errors import ConfigError
    from segmentation.events import read_events

    if args.status_config is not None:
        from federation.config import load_server_config

        run_dir = load_server_config(args.status_config).run_dir
    else:
        run_dir = args.run or Path("runs/server")
    if not (run_dir / METRICS_NAME).is_file() and not (run_dir / EVENTS_NAME).is_file():
        raise ConfigError(f"{run_dir} holds no federated run (no {METRICS_NAME}); "
                          "give the run folder with --run")
    records = [record.to_dict() for record in read_metrics(run_dir / METRICS_NAME)]
    events = list(read_events(run_dir / EVENTS_NAME)) if (run_dir / EVENTS_NAME).is_file() else []
    state = run_state(events)
    summaries = round_summaries(events)
    if args.json:
        print(json.dumps({"run_dir": str(run_dir), **state, "records": records,
                          "round_summaries": [summary.to_dict() for summary in summaries]}, indent=2))
        return 0
    progress = f", round {state['round']} of {state['rounds']}" if state["rounds"] else ""
    print(f"{run_dir}: {state['state']}{progress}")
    if state.get("plan"):
        print(plan_summary(state["plan"]))
    if records:
        print(table_header())
        for record in records:
            print(table_row(record))
    if summaries:
        print("\nper round: seconds; per site its status and array KiB in (its reply) / out (the message)")
        print("\n".join(round_lines(summaries)))
    return 0


def round_lines(summaries: list[RoundSummary]) -> list[str]:
    """The per-round table (federation.site_history.round_table) in right-aligned columns."""
    from federation.round_costs import round_table

    header, rows = round_table(summaries)
    widths = [max(len(cell) for cell in column) for column in zip(header, *rows, strict=True)]
    lines = ["  ".join(cell.rjust(width) for cell, width in zip(row, widths, strict=True))
             for row in (header, *rows)]
    return [lines[0], "-" * len(lines[0]), *lines[1:]]


def run_state(events: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """The latest session's state from the server's events: running, finished or failed, its round and
    the plan in force."""
    state: dict[str, Any] = {"state": "not started", "round": 0, "rounds": None}
    for event in events:
        kind = event.get("kind")
        if kind == "started":
            state.update(state="running", rounds=event.get("rounds"), round=event.get("round", 0))
        elif kind == "checkpoint":
            state["round"] = event.get("round", state["round"])
        elif kind == "finished":
            state["state"] = "finished"
        elif kind == "error":
            state.update(state="failed", error=event.get("message"))
        elif kind == "plan":
            state["plan"] = {key: event.get(key) for key in ("source", "description", "plan", "sites")}
    return state
