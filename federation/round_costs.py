"""What each training round cost: where its time and traffic went, for the operator.

A RoundSummary holds a training round's wall time, the slowest site's own work (each site reports its
seconds in its train reply, SITE_SECONDS_KEY), the overhead between the two, and per site its part
(accepted, dropped with the reason code, or no reply) with the array bytes of the round's message and of
the reply. The server keeps it on the round's checkpoint event (SUMMARY_FIELD); `fedseg server status`,
the demo's report and the workbench's Server page show it with round_table().
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from flwr.app import ArrayRecord, Message

from federation.packed import is_packed, pack
from federation.site_history import SITE_SECONDS_KEY, TRAIN, SiteHistory

# A round summary's status of a site that was sent the round's message and did not answer in time.
NO_REPLY = "no-reply"
# The field of a training round's checkpoint event that holds its RoundSummary.to_dict().
SUMMARY_FIELD = "summary"


@dataclass(frozen=True)
class SiteCost:
    """One site's part in a training round as the server saw it: the verdict on its reply ("accepted", the
    reason code it was dropped, or NO_REPLY), the seconds its own work took as it reported them (None: not
    reported, e.g. a site of an older version, a failed site or no reply), and the array bytes of the
    round's message to it and of its reply (None: no reply)."""

    site: str
    status: str
    work_s: float | None
    array_bytes_sent: int
    array_bytes_received: int | None

    @classmethod
    def from_dict(cls, data: object) -> SiteCost | None:
        """The site's part as RoundSummary.to_dict() wrote it; None for anything else."""
        if not isinstance(data, dict):
            return None
        site, status, work = data.get("site"), data.get("status"), data.get("work_s")
        sent, received = data.get("array_bytes_sent"), data.get("array_bytes_received")
        if not (isinstance(site, str) and isinstance(status, str) and _is_count(sent)
                and (work is None or _is_finite(work)) and (received is None or _is_count(received))):
            return None
        return cls(site, status, None if work is None else float(work), sent, received)


@dataclass(frozen=True)
class RoundSummary:
    """A training round's wall time (from the end of the previous round, or from the plan for a session's
    first round, to its checkpoint) and every site the round's message went to, in sending order."""

    round: int
    wall_s: float
    sites: tuple[SiteCost, ...]

    @property
    def work_s(self) -> float | None:
        """The slowest site's own work: the round waits for every site. None unless every site reported
        its seconds (a site that failed or did not answer worked for an unknown time)."""
        seconds = [cost.work_s for cost in self.sites]
        return None if not seconds or None in seconds else max(seconds)

    @property
    def overhead_s(self) -> float | None:
        """The wall time no site's work explains: transport, Flower, the server's validation, averaging and
        checkpoint; None when the slowest site's work is unknown."""
        work = self.work_s
        return None if work is None else self.wall_s - work

    def to_dict(self) -> dict[str, Any]:
        return {"round": self.round, "wall_s": self.wall_s, "work_s": self.work_s,
                "overhead_s": self.overhead_s, "sites": [asdict(cost) for cost in self.sites]}

    @classmethod
    def from_dict(cls, data: object) -> RoundSummary | None:
        """The summary to_dict() wrote (work and overhead follow from the sites); None for anything else:
        a damaged file or another version's event."""
        if not isinstance(data, dict) or not isinstance(data.get("sites"), list):
            return None
        number, wall = data.get("round"), data.get("wall_s")
        sites = tuple(cost for cost in map(SiteCost.from_dict, data["sites"]) if cost is not None)
        if not _is_count(number) or not _is_finite(wall) or len(sites) != len(data["sites"]):
            return None
        return cls(number, float(wall), sites)


class ArrayBytes:
    """The bytes of a message's arrays as they travel: each ArrayRecord packed (federation.packed: PromptGrid
    and the sites pack every message), the sum of its Array payloads; other records and the transport's
    framing are not counted. PromptGrid hands the replies on unpacked, so an unpacked record is packed
    again to count it. Its packed size follows from its arrays' names, shapes and dtypes alone, so each
    layout is packed once (a round's replies share the global model's); a record that cannot be packed
    (an array that does not decode) counts as it is."""

    def __init__(self) -> None:
        self._by_layout: dict[tuple, int] = {}

    def __call__(self, message: Message) -> int:
        if not message.has_content():
            return 0
        return sum(self._packed(record) for record in message.content.array_records.values())

    def _packed(self, record: ArrayRecord) -> int:
        if is_packed(record):
            return _payload(record)
        layout = tuple((name, array.dtype, tuple(array.shape)) for name, array in record.items())
        if layout not in self._by_layout:
            try:
                self._by_layout[layout] = _payload(pack(record))
            except Exception:  # noqa: BLE001 - a site's undecodable array: validation drops the reply
                return _payload(record)
        return self._by_layout[layout]


def _payload(record: ArrayRecord) -> int:
    return sum(len(array.data) for array in record.values())


def site_costs(
    server_round: int, messages: list[Message], replies: list[Message], history: SiteHistory,
    later_replies: Sequence[Message] = (),
) -> tuple[SiteCost, ...]:
    """Each site's part in a training round, from the round's messages (sent: the grid gave them their
    ids and packed them), the replies and the strategy's verdicts on them in `history`; `later_replies`
    are the round's other replies, whose arrays count as the site's too (with HE: its masked upload and
    any mask corrections, which follow the training reply)."""
    answered = {history.node_of(reply): reply for reply in replies}
    verdicts = {record.node_id: record for record in history.records
                if record.round == server_round and record.phase == TRAIN}
    array_bytes = ArrayBytes()
    later: dict[int, int] = {}
    for reply in later_replies:
        node_id = history.node_of(reply)
        later[node_id] = later.get(node_id, 0) + array_bytes(reply)
    costs = []
    for message in messages:
        node_id = message.metadata.dst_node_id
        reply, record = answered.get(node_id), verdicts.get(node_id)
        if reply is None or record is None:
            costs.append(SiteCost(history.name_of(node_id), NO_REPLY, None, array_bytes(message), None))
            continue
        seconds = record.metrics.get(SITE_SECONDS_KEY)
        costs.append(SiteCost(record.site, record.status, float(seconds) if _is_finite(seconds) else None,
                              array_bytes(message), array_bytes(reply) + later.get(node_id, 0)))
    return tuple(costs)


def round_summaries(events: Iterable[dict[str, Any]]) -> list[RoundSummary]:
    """The round summaries of the server's checkpoint events, by round; a round trained again after a
    resume keeps its latest. Events without a (readable) summary, as before this version, are skipped."""
    summaries = {}
    for event in events:
        if event.get("kind") == "checkpoint":
            summary = RoundSummary.from_dict(event.get(SUMMARY_FIELD))
            if summary is not None:
                summaries[summary.round] = summary
    return [summaries[number] for number in sorted(summaries)]


def round_table(summaries: Sequence[RoundSummary]) -> tuple[list[str], list[list[str]]]:
    """The per-round table `fedseg server status`, the demo report and the workbench show: the wall time,
    the slowest site's work and the overhead in seconds, then per site its status and the array KiB in
    (its reply) / out (the round's message to it). "-": unknown, or a site the round did not ask."""
    sites = list(dict.fromkeys(cost.site for summary in summaries for cost in summary.sites))
    header = ["round", "wall s", "slowest site s", "overhead s", *(f"{site} (KiB in/out)" for site in sites)]
    rows = []
    for summary in summaries:
        costs = {cost.site: cost for cost in summary.sites}
        rows.append([str(summary.round), _seconds(summary.wall_s), _seconds(summary.work_s),
                     _seconds(summary.overhead_s), *(_site_cell(costs.get(site)) for site in sites)])
    return header, rows


def _site_cell(cost: SiteCost | None) -> str:
    if cost is None:
        return "-"
    return f"{cost.status} {_kib(cost.array_bytes_received)}/{_kib(cost.array_bytes_sent)}"


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def _kib(value: int | None) -> str:
    """KiB with a decimal below 100 KiB, whole above (a model's megabytes need no tenths)."""
    if value is None:
        return "-"
    kib = value / 1024
    return f"{kib:.1f}" if kib < 100 else f"{kib:.0f}"


def _is_finite(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _is_count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0
