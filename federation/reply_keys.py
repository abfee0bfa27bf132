"""The metric and config keys a site's reply may carry; a reply with any other key is dropped.

A MetricRecord or ConfigRecord takes any key name, and the server writes a reply's metrics into its files
and shares them back with every site (federation.task.shared_history_json): an open set of names would be
a channel for free text (a patient's name as a metric key) from one site to the others. So the server
knows the names sites send, per-label scores only for the labels of the model it sent, and drops a reply
with any other name as UNKNOWN_KEY without writing that name anywhere.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

from flwr.app import ConfigRecord, RecordDict

from federation.he.records import FINGERPRINT_KEY
from federation.he.roster import ADVERTISEMENT_FIELDS, ADVERTISEMENT_RECORD, ROUND_KEY
from federation.site_history import SITE_NAME_KEY, SITE_RECORD_KEY, SITE_SECONDS_KEY
from federation.task import (
    AFTER,
    BEFORE,
    DATA_FINGERPRINT_KEY,
    MODEL_KEY,
    NUM_EXAMPLES,
    TRAIN_LOSS,
    model_from_json,
)
from federation.validation import UNKNOWN_KEY, Verdict
from segmentation.settings import EPSILON_METRIC, PERSONALISED_MODEL

# The scores of segmentation.metrics.EvaluationResult.metrics: over all labels, and as "<score>/<label>".
SCORES = ("dice", "hd95")
# The models a site scores: the received one (evaluation), before and after its training, its own fine-tune.
SCORE_PREFIXES = ("", f"{BEFORE}/", f"{AFTER}/", f"{PERSONALISED_MODEL}/")
PLAIN_METRICS = (NUM_EXAMPLES, TRAIN_LOSS, SITE_SECONDS_KEY, EPSILON_METRIC)
# A reply's ConfigRecords by name: the site's record (federation.site_work adds it to every reply: its
# display name, and its HE key under HE), the answer to the fingerprint query (federation.planning) and,
# under HE, the site's signed mask key (federation.he.roster).
CONFIG_KEYS = {SITE_RECORD_KEY: frozenset({SITE_NAME_KEY, FINGERPRINT_KEY}),
               DATA_FINGERPRINT_KEY: frozenset({DATA_FINGERPRINT_KEY}),
               ADVERTISEMENT_RECORD: frozenset({*ADVERTISEMENT_FIELDS, ROUND_KEY})}


@dataclass(frozen=True)
class ReplyKeys:
    """The names a reply may carry when the federation's model segments `labels` (foreground names)."""

    labels: tuple[str, ...] = ()

    @classmethod
    def of_round(cls, config: ConfigRecord) -> ReplyKeys:
        """The names for replies to a message with this ConfigRecord: its model's foreground labels
        (without a model no per-label score is known)."""
        if MODEL_KEY not in config:
            return cls()
        labels = model_from_json(str(config[MODEL_KEY])).labels
        return cls(tuple(name for value, name in labels.items() if value != 0))

    @cached_property
    def metrics(self) -> frozenset[str]:
        """Every known metric name: the plain numbers, and each score under each model's prefix."""
        scores = [*SCORES, *(f"{score}/{label}" for score in SCORES for label in self.labels)]
        return frozenset([*PLAIN_METRICS, *(prefix + score for prefix in SCORE_PREFIXES for score in scores)])


def check_reply_keys(content: RecordDict, keys: ReplyKeys) -> Verdict | None:
    """An UNKNOWN_KEY verdict when a MetricRecord or ConfigRecord holds a name `keys` does not know; None
    when all are known. The detail counts the names but never repeats them: they are the site's text."""
    unknown = sum(key not in keys.metrics for record in content.metric_records.values() for key in record)
    if unknown:
        return Verdict(UNKNOWN_KEY, f"{unknown} metric name(s) the federation does not know")
    for name, record in content.config_records.items():
        known = CONFIG_KEYS.get(name)
        if known is None:
            return Verdict(UNKNOWN_KEY, "a config record the federation does not know")
        unknown = sum(key not in known for key in record)
        if unknown:
            return Verdict(UNKNOWN_KEY, f"{unknown} config name(s) the federation does not know")
    return None
