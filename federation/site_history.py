"""Per-site, per-round record of what every site replied and what the server made of it.

The strategy appends one SiteRound per reply; the server app writes the history out as metrics.jsonl
and metrics.csv (pure writers below, atomic so a killed server never leaves half a file). Sites are
keyed by the display name they send in their reply's ConfigRecord, never by a path.
"""

from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

from flwr.app import Message
from flwr.common.constant import SUPERLINK_NODE_ID

from federation.validation import ACCEPTED, is_site_name
from segmentation.atomic import write_text_atomic

# The ConfigRecord every reply of a site carries, and the key of its display name in it.
SITE_RECORD_KEY = "site"
SITE_NAME_KEY = "site-name"
# A train reply's metric: the seconds the site spent on the round's work (scoring and training the model).
SITE_SECONDS_KEY = "site-seconds"
TRAIN = "train"
EVALUATE = "evaluate"
_FIXED_COLUMNS = ("round", "phase", "site", "node_id", "status", "num_examples", "update_norm")

Number = int | float
MetricValue = Number | list[Number]


@dataclass(frozen=True)
class SiteRound:
    """One site's reply in one round and phase; status is "accepted" or the reason code it was dropped."""

    round: int
    phase: str
    site: str
    node_id: int
    status: str
    num_examples: Number | None = None
    update_norm: float | None = None
    metrics: dict[str, MetricValue] = field(default_factory=dict)

    @property
    def accepted(self) -> bool:
        return self.status == ACCEPTED

    def to_dict(self) -> dict:
        """Plain JSON-ready numbers: NaN and Inf become None."""
        return _finite_or_none(asdict(self))


@dataclass
class SiteHistory:
    """Everything the sites replied, in arrival order, plus the last display name seen per node and the
    node each message went to (the SuperLink answers for a node that left, as node 1)."""

    records: list[SiteRound] = field(default_factory=list)
    names: dict[int, str] = field(default_factory=dict)
    destinations: dict[str, int] = field(default_factory=dict)  # message id -> node id

    def sent(self, messages: list[Message]) -> None:
        """Remember where each message (sent, so it has its id) went."""
        for message in messages:
            self.destinations[message.metadata.message_id] = message.metadata.dst_node_id

    def node_of(self, reply: Message) -> int:
        """The node a reply is about: its sender, or for the SuperLink's own error reply (the node left
        or never answered) the node the message was sent to."""
        node_id = reply.metadata.src_node_id
        if node_id == SUPERLINK_NODE_ID:
            return self.destinations.get(reply.metadata.reply_to_message_id, node_id)
        return node_id

    def site_name(self, reply: Message) -> str:
        """The reply's display name if it sent a valid one, else the node's last name, else node-<id>."""
        node_id = self.node_of(reply)
        if reply.has_content():
            for config in reply.content.config_records.values():
                name = config.get(SITE_NAME_KEY)
                if is_site_name(name):
                    self.names[node_id] = name
                    return name
        return self.name_of(node_id)

    def name_of(self, node_id: int) -> str:
        """The node's last display name, else node-<id>."""
        return self.names.get(node_id, f"node-{node_id}")

    def add(self, record: SiteRound) -> None:
        self.records.append(record)

    def sites(self) -> list[str]:
        """Display names in the order they first appeared."""
        return list(dict.fromkeys(record.site for record in self.records))


def _finite_or_none(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: _finite_or_none(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_finite_or_none(item) for item in value]
    return value


def _flat_row(record: SiteRound) -> dict[str, object]:
    """One CSV row: the fixed columns, then each metric; list metrics become name.0, name.1, ..."""
    data = record.to_dict()
    row = {column: data[column] for column in _FIXED_COLUMNS}
    for key, value in data["metrics"].items():
        if isinstance(value, list):
            row.update({f"{key}.{index}": item for index, item in enumerate(value)})
        else:
            row[key] = value
    return row


def metrics_jsonl(records: list[SiteRound]) -> str:
    """One strict-JSON object per record and line."""
    return "".join(json.dumps(record.to_dict(), allow_nan=False) + "\n" for record in records)


def metrics_csv(records: list[SiteRound]) -> str:
    """A table with one row per record; metric columns are the sorted union over all records."""
    rows = [_flat_row(record) for record in records]
    metric_columns = sorted({key for row in rows for key in row} - set(_FIXED_COLUMNS))
    stream = io.StringIO()
    writer = csv.DictWriter(stream, fieldnames=[*_FIXED_COLUMNS, *metric_columns], lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return stream.getvalue()


def write_metrics(records: list[SiteRound], run_dir: str | Path) -> tuple[Path, Path]:
    """Write metrics.jsonl and metrics.csv into the run folder; returns both paths."""
    run_dir = Path(run_dir)
    return (
        write_text_atomic(run_dir / "metrics.jsonl", metrics_jsonl(records)),
        write_text_atomic(run_dir / "metrics.csv", metrics_csv(records)),
    )
