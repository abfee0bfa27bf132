"""Per-site, per-round numbers of a federation, from the site-metrics events the server shares, and the
plan the run follows (its "plan" event).

Each record is one site's reply in one round and phase ("train" or "evaluate"), as the server
recorded it: status ("accepted" or why it was dropped), number of examples and metrics. What happened
before round 1 (the planning query) is no round: it becomes the plan line or a planning problem.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from typing import Any

from app.models.federation import PLANNING_ROUND, PlanInForce, plan_in_force
from app.models.signals import Signal
from segmentation.settings import epsilon_by_round

# The Dice a site's round is charted by, in order of preference: the global model evaluated on the
# site's validation data (evaluate phase), else the global model before local training (train phase).
DICE_KEYS = (("evaluate", "dice"), ("train", "before/dice"))


@dataclass(frozen=True)
class SiteRecord:
    round: int
    site: str
    phase: str
    status: str
    num_examples: float | None
    metrics: dict[str, float] = field(default_factory=dict)


class FederationMetrics:
    """Signals: changed() when records were added."""

    def __init__(self) -> None:
        self.changed = Signal()
        self.records: dict[tuple[int, str, str], SiteRecord] = {}
        self.plan: PlanInForce | None = None
        self.planning_problem = ""

    def clear(self) -> None:
        self.records.clear()
        self.plan, self.planning_problem = None, ""
        self.changed.emit()

    def apply_all(self, events: list[dict[str, Any]]) -> None:
        """Take the site-metrics and plan events among `events` (a repeated record replaces the earlier
        one); a planning failure (an error before round 1) becomes the planning problem, not a record."""
        added = False
        for event in events:
            plan, problem, record = plan_in_force(event), _planning_problem(event), _record(event)
            if plan is not None:
                self.plan = plan
            if problem:
                self.planning_problem = problem
            if record is not None:
                self.records[(record.round, record.site, record.phase)] = record
            added = added or plan is not None or bool(problem) or record is not None
        if added:
            self.changed.emit()

    def plan_line(self) -> str:
        """The plan in force, or why there is none; empty before either is known."""
        if self.planning_problem:
            return self.planning_problem
        return f"Plan: {self.plan.line()}" if self.plan is not None else ""

    def sites(self) -> list[str]:
        return sorted({record.site for record in self.records.values()})

    def rounds(self) -> list[int]:
        return sorted({record.round for record in self.records.values()})

    def dice_by_site(self) -> dict[str, list[tuple[int, float]]]:
        """Each site's Dice of the global model per round (see DICE_KEYS), accepted replies only."""
        chosen: dict[tuple[str, int], float] = {}
        for phase, key in reversed(DICE_KEYS):  # preferred keys last, so they overwrite
            for record in self.records.values():
                if record.phase == phase and record.status == "accepted" and key in record.metrics:
                    chosen[(record.site, record.round)] = record.metrics[key]
        return _series(chosen)

    def epsilon_by_site(self) -> dict[str, list[tuple[int, float]]]:
        """Each private site's epsilon spent by the end of each round's training; empty when no site trains
        with DP (segmentation.settings.epsilon_by_round, as the demo's report)."""
        return epsilon_by_round(self.records.values())

    def table(self) -> tuple[list[str], list[list[str]]]:
        """Column names and rows (round, site, phase, status, examples, then every metric seen)."""
        names = {name for record in self.records.values() for name in record.metrics}
        metric_names = sorted(names, key=lambda name: (name.count("/"), name))  # summary numbers first
        header = ["round", "site", "phase", "status", "examples", *metric_names]
        rows = []
        for record in sorted(self.records.values(), key=lambda r: (r.round, r.site, r.phase)):
            examples = "" if record.num_examples is None else f"{record.num_examples:g}"
            values = [_format(record.metrics.get(name)) for name in metric_names]
            rows.append([str(record.round), record.site, record.phase, record.status, examples, *values])
        return header, rows

    def to_csv(self) -> str:
        header, rows = self.table()
        stream = io.StringIO()
        writer = csv.writer(stream, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)
        return stream.getvalue()


def _series(values: dict[tuple[str, int], float]) -> dict[str, list[tuple[int, float]]]:
    """{(site, round): value} as each site's (round, value) points in round order."""
    series: dict[str, list[tuple[int, float]]] = {}
    for (site, number), value in sorted(values.items()):
        series.setdefault(site, []).append((number, value))
    return series


def _format(value: float | None) -> str:
    return "" if value is None else f"{value:.4g}"


def _planning_problem(event: dict[str, Any]) -> str:
    """Why planning failed, from an error event of the planning step (round 0, or the server's
    PlanningError, which has no round); empty for anything else."""
    if event.get("kind") != "error":
        return ""
    round_ = event.get("round")
    if event.get("code") != "PlanningError" and not (isinstance(round_, int) and round_ <= PLANNING_ROUND):
        return ""
    site = event.get("site")
    where = f" at {site}" if isinstance(site, str) and site else ""
    return f"Planning failed{where}: {event.get('message', 'unknown error')}"


def _record(event: dict[str, Any]) -> SiteRecord | None:
    """A SiteRecord from a well-formed site-metrics event of a round (1 or later); anything else is
    ignored."""
    if event.get("kind") != "site-metrics":
        return None
    round_, site, phase = event.get("round"), event.get("site"), event.get("phase")
    if not isinstance(round_, int) or not isinstance(site, str) or not isinstance(phase, str):
        return None
    if round_ <= PLANNING_ROUND:
        return None
    metrics = event.get("metrics") if isinstance(event.get("metrics"), dict) else {}
    numbers = {str(k): float(v) for k, v in metrics.items() if _is_number(v)}
    examples = event.get("num_examples")
    examples = float(examples) if _is_number(examples) else None
    return SiteRecord(round_, site, phase, str(event.get("status", "")), examples, numbers)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)
