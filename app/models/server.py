"""The federation server as its operator sees it, rebuilt from the run folder's events.jsonl (the events
`fedseg server status` reads): its state, the round in progress, the sites heard from, every site's
numbers per round and the plan in force (both through app.models.metrics), the round of the last
saved global model, and what each round cost (the summaries its checkpoint events carry). A resumed
run's file holds several sessions; each "started" begins a new one."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Any

from app.models.federation import PLANNING_ROUND
from app.models.metrics import FederationMetrics
from app.models.signals import Signal
from federation.round_costs import RoundSummary, round_summaries, round_table


class ServerState(Enum):
    STOPPED = "not running"
    STARTING = "starting"
    WAITING = "waiting for sites"
    RUNNING = "running"
    STOPPING = "stopping"
    FINISHED = "finished"
    FAILED = "failed"

    @property
    def active(self) -> bool:
        """Whether the server process is (or should be) running."""
        return self in (ServerState.STARTING, ServerState.WAITING, ServerState.RUNNING, ServerState.STOPPING)


@dataclass(frozen=True)
class SiteSeen:
    """A site the server heard from: the latest round it answered (0: the planning query) and the
    server's verdict on that answer ("accepted" or why it was dropped)."""

    name: str
    round: int
    status: str


class ServerRun:
    """Signals: changed() after events were applied or the state was set."""

    def __init__(self) -> None:
        self.changed = Signal()
        self.metrics = FederationMetrics()
        self.reset()

    def reset(self) -> None:
        self.state = ServerState.STOPPED
        self.message = ""
        self.rounds: int | None = None
        self.completed = 0  # rounds aggregated and checkpointed: the saved global model's round
        self.online: int | None = None  # SuperNodes the SuperLink counts as online, when last asked
        self.planning: dict[str, str] = {}  # each site's answer to the run's planning query
        self.costs: dict[int, RoundSummary] = {}  # by round: a round trained again keeps its latest
        self.metrics.clear()

    def set_state(self, state: ServerState, message: str = "") -> None:
        self.state, self.message = state, message
        self.changed.emit()

    def set_online(self, count: int | None) -> None:
        if count != self.online:
            self.online = count
            self.changed.emit()

    def apply_all(self, events: list[dict[str, Any]]) -> None:
        """Take the server's events in order (site metrics and the plan go to `metrics`)."""
        for event in events:
            self._apply(event)
        self.metrics.apply_all(events)
        self.costs.update((summary.round, summary) for summary in round_summaries(events))
        if events:
            self.changed.emit()

    def _apply(self, event: dict[str, Any]) -> None:
        kind, number = event.get("kind"), event.get("round")
        if kind == "started":
            self.rounds = _count(event.get("rounds"))
            self.completed = _count(number) or 0
            after = f"; continuing after round {self.completed}" if self.completed else ""
            self._session(ServerState.WAITING, f"waiting for sites{after}")
        elif kind == "plan":
            if isinstance(sites := event.get("sites"), list):  # a plan kept from a checkpoint asks no site
                self.planning = {str(site.get("site", "?")): str(site.get("status", "?"))
                                 for site in sites if isinstance(site, dict)}
            self._session(ServerState.RUNNING, self._round_line())
        elif kind == "checkpoint" and _count(number) is not None:
            self.completed = int(number)  # type: ignore[arg-type]
            self._session(ServerState.RUNNING, self._round_line())
        elif kind == "finished":
            self._session(ServerState.FINISHED, f"finished after {self.completed} round(s)")
        elif kind == "error":
            self._session(ServerState.FAILED, str(event.get("message") or "the run failed"))

    def _session(self, state: ServerState, message: str) -> None:
        """A state the events say; a stop the operator asked for stays shown until the process ends."""
        if self.state is not ServerState.STOPPING:
            self.state, self.message = state, message

    def _round_line(self) -> str:
        if self.rounds is not None and self.completed >= self.rounds:
            return f"all {self.rounds} rounds done; the sites score the final model"
        return f"round {self.completed + 1} of {self.rounds or '?'}"

    @property
    def round_in_progress(self) -> int | None:
        """The round being trained now; None before the plan, after the last round and when not running."""
        if self.state is not ServerState.RUNNING or self.rounds is None or self.completed >= self.rounds:
            return None
        return self.completed + 1

    @property
    def fraction(self) -> float:
        """Share of the run's rounds done, 0..1."""
        return min(self.completed / self.rounds, 1.0) if self.rounds else 0.0

    def cost_table(self) -> tuple[list[str], list[list[str]]]:
        """What each round cost, as `fedseg server status` shows it (header and rows)."""
        return round_table([self.costs[number] for number in sorted(self.costs)])

    def sites(self) -> list[SiteSeen]:
        """Every site heard from, by name, with its latest answer (a round's reply over its fingerprint)."""
        latest = {name: SiteSeen(name, PLANNING_ROUND, status) for name, status in self.planning.items()}
        # In time order: a round's training replies come before its evaluation (the final round's).
        records = self.metrics.records.values()
        for record in sorted(records, key=lambda record: (record.round, record.phase != "train")):
            latest[record.site] = SiteSeen(record.site, record.round, record.status)
        return [latest[name] for name in sorted(latest)]


def _count(value: Any) -> int | None:
    """A round number or count from an event: a non-negative int, else None."""
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None
