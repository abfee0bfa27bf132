"""This site's part in a federation, rebuilt from its `fedseg site` process: connection state, the
round in progress, one row per round (local loss, Dice of the global model before and after), and the
plan in force (from a "plan" event) or why planning failed here (an error before round 1)."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Any

from app.models.signals import Signal


class SiteState(Enum):
    IDLE = "not joined"
    CONNECTING = "connecting"
    WAITING = "waiting for a round"
    TRAINING = "training"
    LEAVING = "leaving"
    LEFT = "left"
    FAILED = "failed"

    @property
    def active(self) -> bool:
        return self in (SiteState.CONNECTING, SiteState.WAITING, SiteState.TRAINING, SiteState.LEAVING)


@dataclass(frozen=True)
class Channel:
    """What protects a site's link and its updates with the current settings: TLS on the wire, the node
    key that proves the site to the server, homomorphic encryption that hides updates from the server,
    differential privacy (DP-SGD) that bounds what the updates tell about any one training slice."""

    tls: bool
    node_auth: bool
    he: bool
    dp: bool = False

    def badges(self) -> list[tuple[str, str]]:
        """(text, tone) per protection, for the page's badges: missing protections are not hidden."""
        return [("TLS" if self.tls else "No TLS: unencrypted", "good" if self.tls else "bad"),
                ("Node key" if self.node_auth else "No node key", "good" if self.node_auth else ""),
                ("HE" if self.he else "No HE", "good" if self.he else ""),
                ("DP" if self.dp else "No DP", "good" if self.dp else "")]

    def sentence(self) -> str:
        """What leaves the site and how, in words a site admin can check against the badges."""
        wire = ("over TLS" if self.tls else "UNENCRYPTED on the network (no TLS, for testing only)")
        update = ("encrypted with homomorphic encryption and masked pairwise with the other sites, so the "
                  "server cannot read them" if self.he
                  else "in plaintext to the server (no homomorphic encryption)")
        who = "; the server knows this site by its node key" if self.node_auth else ""
        private = (" Training is differentially private (DP-SGD): the updates bound what anyone can learn "
                   "about any one training slice, and the privacy spent (epsilon) leaves with them."
                   if self.dp else "")
        return (f"Model updates and summary numbers leave this site {wire}, {update}{who}.{private} "
                "Images never leave.")


PLANNING_ROUND = 0  # the fingerprint query before round 1 carries round 0
ACCEPTED = "accepted"


@dataclass(frozen=True)
class PlanInForce:
    """The plan a federated run follows, as its "plan" event announces it: the plan's one-line
    description, where it came from ("fingerprints" or "checkpoint"), and the sites whose fingerprint
    was not used, each with its status."""

    description: str
    source: str = ""
    sites: int = 0  # sites asked for a fingerprint (0: the plan was kept from a checkpoint)
    left_out: tuple[tuple[str, str], ...] = ()

    def line(self) -> str:
        """One sentence for a page: what the plan is and where it came from."""
        if self.source == "checkpoint":
            origin = " (kept from the run's checkpoint)"
        elif self.sites:
            origin = f" (from {self.sites - len(self.left_out)} of {self.sites} site(s)' fingerprints)"
        else:
            origin = ""
        left = "; left out: " + ", ".join(f"{site} ({status})" for site, status in self.left_out) \
            if self.left_out else ""
        return f"{self.description}{origin}{left}"


def plan_in_force(event: dict[str, Any]) -> PlanInForce | None:
    """The PlanInForce of a well-formed "plan" event; anything else is None."""
    description = event.get("description")
    if event.get("kind") != "plan" or not isinstance(description, str) or not description:
        return None
    sites = event.get("sites") if isinstance(event.get("sites"), list) else []
    answers = [site for site in sites if isinstance(site, dict)]
    left_out = tuple((str(site.get("site", "?")), str(site.get("status", "?"))) for site in answers
                     if site.get("status") != ACCEPTED)
    return PlanInForce(description, str(event.get("source", "")), len(answers), left_out)


@dataclass
class RoundRow:
    round: int
    loss: float | None = None
    dice_before: float | None = None  # the global model on this site's validation data, before training
    dice_after: float | None = None  # after this site's local training
    dice_global: float | None = None  # the round's new global model, evaluated here


class SiteRun:
    """Signals: changed()."""

    def __init__(self) -> None:
        self.changed = Signal()
        self.reset()

    def reset(self) -> None:
        self.state = SiteState.IDLE
        self.message = ""
        self.round = 0
        self.step = self.steps = self.epoch = self.epochs = 0
        self.rows: dict[int, RoundRow] = {}
        self.plan: PlanInForce | None = None
        self.planning_problem = ""  # why this site could not answer the server's planning query

    def set_state(self, state: SiteState, message: str = "") -> None:
        self.state, self.message = state, message
        self.changed.emit()

    def apply_all(self, events: list[dict[str, Any]]) -> None:
        for event in events:
            self._apply(event)
        if events:
            self.changed.emit()

    def plan_line(self, shared: PlanInForce | None = None) -> str:
        """What the page says about the plan: why planning failed here, else the plan in force (this
        site's own plan event, else `shared`: the server's, when its events are followed too)."""
        if self.planning_problem:
            return self.planning_problem[0].upper() + self.planning_problem[1:]
        plan = self.plan or shared
        if plan is None:
            return "Plan: made by the server from every site's fingerprint before round 1"
        return f"Plan: {plan.line()}"

    @property
    def fraction(self) -> float:
        """Progress of the round in progress: 0..1."""
        total = self.steps * max(self.epochs, 1)
        return min(((max(self.epoch - 1, 0)) * self.steps + self.step) / total, 1.0) if total else 0.0

    def _apply(self, event: dict[str, Any]) -> None:
        kind, number = event.get("kind"), event.get("round")
        if kind == "connection":
            self._connection(event)
            return
        if kind == "plan":
            self.plan = plan_in_force(event) or self.plan
            return
        if not isinstance(number, int):
            return
        if number <= PLANNING_ROUND:
            if kind == "error":  # the fingerprint query, not a round: no row
                self.planning_problem = f"planning failed here: {event.get('message', 'unknown error')}"
                self.message = self.planning_problem
            return
        row = self.rows.setdefault(number, RoundRow(number)) if kind != "site-metrics" else None
        metrics = event.get("metrics") if isinstance(event.get("metrics"), dict) else {}
        if kind == "started":
            self.round, self.step, self.epoch = number, 0, 0
            self.epochs = int(event.get("epochs") or 1)
            self.state, self.message = SiteState.TRAINING, f"training round {number}"
        elif kind == "progress":
            # The site's model counts epochs across rounds (epoch 3 of 4 is round 2's first of 2).
            total = int(event.get("epochs", 1))
            self.epochs = self.epochs or total
            self.epoch = int(event.get("epoch", 1)) - max(total - self.epochs, 0)
            self.step, self.steps = int(event.get("step", 0)), int(event.get("steps", 0))
        elif kind == "finished" and row is not None:
            row.loss = _number(metrics.get("train-loss"))
            row.dice_before = _number(metrics.get("before/dice"))
            row.dice_after = _number(metrics.get("after/dice"))
            self._started_from(number, row.dice_before)
            self.step = self.steps
            self.state, self.message = SiteState.WAITING, f"round {number} sent; waiting for the next"
        elif kind == "evaluation" and event.get("phase") == "evaluate" and row is not None:
            row.dice_global = _number(metrics.get("dice"))
        elif kind == "evaluation" and event.get("model") == "global" and row is not None:
            row.dice_before = _number(metrics.get("dice"))  # scored before training, as the round starts
            self._started_from(number, row.dice_before)
        elif kind == "error":
            self.message = f"round {number} failed here: {event.get('message', 'unknown error')}"


    def _started_from(self, number: int, dice: float | None) -> None:
        """Round `number` started from the last round's global model: its score here is that round's
        "Global Dice here" (the final round's comes from the final evaluation)."""
        previous = self.rows.get(number - 1)
        if previous is not None and previous.dice_global is None:
            previous.dice_global = dice

    def _connection(self, event: dict[str, Any]) -> None:
        """`fedseg site`'s word on its link: connecting (again, after a server restart), in, or given up."""
        state = event.get("state")
        if state == "connecting":
            timeout = _number(event.get("timeout"))
            limit = f" (giving up after {timeout:g} s)" if timeout else ""
            self.state, self.message = SiteState.CONNECTING, f"connecting to the server{limit}…"
        elif state == "connected" and self.state is SiteState.CONNECTING:
            self.state, self.message = SiteState.WAITING, "connected; waiting for the server's next round"
        elif state == "failed":
            self.state = SiteState.FAILED
            self.message = f"could not join: {event.get('message', event.get('reason', 'unknown reason'))}"


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None
