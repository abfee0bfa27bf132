"""FedAvg and FedProx that check every reply before aggregating, so one bad site cannot end a run.

Stock flwr 1.42 raises out of FedAvg on one wrong-shaped reply and averages NaN straight in. These
subclasses judge each reply with federation.validation, drop the bad ones with a logged reason,
delegate the averaging to Flower's own helpers, keep the previous global model when fewer than
`min_valid_replies` survive, and record every site's reply in a SiteHistory. A reply with a metric or
config name the federation does not know is dropped first (federation.reply_keys), and the history keeps
only known metric names, so the server never shares a site's free text with the others. With homomorphic
encryption (an EncryptedAggregation) the training replies carry numbers and a signed mask key, and
federation.he.secure_round collects the masked, encrypted uploads and adds them as ciphertexts.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg, FedProx
from flwr.serverapp.strategy.strategy_utils import aggregate_arrayrecords

from federation.config import FederationSettings
from federation.he.records import HE_KEY_MISMATCH
from federation.he.roster import NODE_KEY_IN_ROUND, RUN_KEY
from federation.he.secure_round import EncryptedAggregation
from federation.reply_keys import ReplyKeys, check_reply_keys
from federation.site_history import EVALUATE, TRAIN, SiteHistory, SiteRound
from federation.task import SiteErrorCode
from federation.validation import (
    SITE_ERROR,
    ValidationLimits,
    Verdict,
    validate_metrics_reply,
    validate_replies,
)

logger = logging.getLogger(__name__)


def cast_like(arrays: ArrayRecord, reference: dict[str, np.ndarray]) -> ArrayRecord:
    """The averaged arrays in the global model's key order and dtypes (integers are rounded).

    Averaging turns integer buffers (e.g. BatchNorm's step counter) into floats; without the cast
    every site's next reply would differ in dtype from the global model and be dropped.
    """
    cast = {}
    for key, expected in reference.items():
        value = arrays[key].numpy()
        if expected.dtype.kind in "iub":
            value = np.rint(value)
        cast[key] = Array(np.asarray(value, dtype=expected.dtype))
    return ArrayRecord(cast)


def common_metrics(contents: list[RecordDict]) -> list[RecordDict]:
    """Each reply's MetricRecord cut to the keys every reply shares with the same shape.

    Flower's metric averaging expects identical keys and list lengths; a site that reports one metric
    more (or fewer) must not break the round, so only the shared part is averaged.
    """
    records = [next(iter(content.metric_records.values())) for content in contents]
    shared = [
        key for key, value in records[0].items()
        if all(key in record and _same_shape(record[key], value) for record in records[1:])
    ]
    return [RecordDict({"metrics": MetricRecord({key: record[key] for key in shared})}) for record in records]


def _same_shape(value: object, other: object) -> bool:
    if isinstance(value, list) or isinstance(other, list):
        return isinstance(value, list) and isinstance(other, list) and len(value) == len(other)
    return True


class ValidatingFedAvg(FedAvg):
    """FedAvg that validates each reply against the round's global arrays before averaging."""

    def __init__(
        self,
        *,
        limits: ValidationLimits | None = None,
        min_valid_replies: int = 1,
        he: EncryptedAggregation | None = None,
        **fedavg_arguments,
    ) -> None:
        super().__init__(**fedavg_arguments)
        if min_valid_replies < 1:
            raise ValueError(f"min_valid_replies must be at least 1, got {min_valid_replies}")
        self.limits = limits or ValidationLimits()
        self.min_valid_replies = min_valid_replies
        self.he = he
        self.history = SiteHistory()
        self.reply_keys = ReplyKeys()  # the names replies may carry: set by each configure_* from its model
        self._global_arrays: ArrayRecord | None = None
        # How an HE round's upload and unmask queries go out: server_run's, with the round's timeout and
        # cost accounting.
        self.send: Callable[[list[Message]], list[Message]] | None = None
        self._run_id = 0  # the Flower run's, bound into every mask key

    def summary(self) -> None:
        """Log the validation settings and the HE key, then Flower's own summary."""
        logger.info("reply validation: %s, min_valid_replies=%d", self.limits, self.min_valid_replies)
        if self.he is not None:
            logger.info("homomorphic encryption on: HE key %s (public context only)", self.he.fingerprint)
        super().summary()

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """Remember the global arrays the replies will be judged against, then configure as usual; with HE
        tell each sampled site the run and its node id, which its signed mask key names, and the round's
        roster when every sampled site advertised a mask key for it (federation.he.secure_round)."""
        self._global_arrays, self._run_id = arrays, _run_id(grid)
        self.reply_keys = ReplyKeys.of_round(config)
        messages = list(super().configure_train(server_round, arrays, config, grid))
        if self.he is not None:  # Flower's messages share one content: each gets its own here
            nodes = [message.metadata.dst_node_id for message in messages]
            roster = self.he.roster_config(server_round, nodes)
            messages = [Message(RecordDict({
                **message.content, self.configrecord_key: ConfigRecord({
                    **message.content.config_records[self.configrecord_key], **roster,
                    NODE_KEY_IN_ROUND: message.metadata.dst_node_id, RUN_KEY: self._run_id})}),
                dst_node_id=message.metadata.dst_node_id, message_type=message.metadata.message_type)
                for message in messages]
        return messages

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Average the valid replies; with too few of them, return the unchanged global arrays."""
        if self._global_arrays is None:
            raise RuntimeError("configure_train must run before aggregate_train")
        replies = list(replies)
        if self.he is not None:
            verdicts, arrays = self._judge_and_add_encrypted(server_round, replies)
        else:
            reference = {key: array.numpy() for key, array in self._global_arrays.items()}
            answered = [reply.content for reply in replies if not reply.has_error()]
            judged = iter(self._judge_train(answered, reference))
            verdicts = [error_verdict(reply) if reply.has_error() else next(judged) for reply in replies]
        valid = self._record(server_round, TRAIN, replies, verdicts)
        if len(valid) < self.min_valid_replies:  # with HE, exactly when there is no sum
            logger.warning(
                "round %d: %d valid repl(ies), fewer than the %d required; the global model stays as it was",
                server_round, len(valid), self.min_valid_replies,
            )
            return self._global_arrays, None
        contents = [reply.content for reply in valid]
        if self.he is None:
            arrays = cast_like(aggregate_arrayrecords(contents, self.weighted_by_key), reference)
        return arrays, self.train_metrics_aggr_fn(common_metrics(contents), self.weighted_by_key)

    def _judge_train(self, contents: list[RecordDict], reference: dict[str, np.ndarray]) -> list[Verdict]:
        """One verdict per training reply: its names first, then the other checks on the replies whose
        names are known, so an unknown name reaches neither the norm check nor the sum."""
        named = [check_reply_keys(content, self.reply_keys) for content in contents]
        known = [content for content, verdict in zip(contents, named, strict=True) if verdict is None]
        judged = iter(validate_replies(known, reference, self.limits, self.weighted_by_key))
        return [verdict or next(judged) for verdict in named]

    def _judge_and_add_encrypted(
        self, server_round: int, replies: list[Message]
    ) -> tuple[list[Verdict], ArrayRecord | None]:
        """Judge the training replies of an HE round, collect the accepted sites' masked uploads and add
        them (federation.he.secure_round): each site's last verdict of the round, and the sum (None with
        fewer than min_valid_replies uploads)."""
        assert self.he is not None
        if self.send is None:
            raise RuntimeError("an encrypted round needs the server's send for its upload queries")
        verdicts = [error_verdict(reply) if reply.has_error()
                    else check_reply_keys(reply.content, self.reply_keys)
                    or self.he.judge_train(reply.content, self.limits, self.weighted_by_key)
                    for reply in replies]
        candidates = [reply for reply, verdict in zip(replies, verdicts, strict=True) if verdict.accepted]
        arrays, later = None, {}
        if len(candidates) >= self.min_valid_replies:
            arrays, later = self.he.secure_sum(server_round, self._run_id, candidates, self.weighted_by_key,
                                               self.send, error_verdict, self.min_valid_replies)
        verdicts = [later.get(reply.metadata.src_node_id, verdict) if verdict.accepted else verdict
                    for reply, verdict in zip(replies, verdicts, strict=True)]
        return verdicts, arrays

    def configure_evaluate(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """Learn the names the evaluation replies may carry from the message's model, then configure."""
        self.reply_keys = ReplyKeys.of_round(config)
        return super().configure_evaluate(server_round, arrays, config, grid)

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]) -> MetricRecord | None:
        """Average the metrics of the valid evaluation replies; None when there are none."""
        replies = list(replies)
        verdicts = [
            error_verdict(reply) if reply.has_error()
            else check_reply_keys(reply.content, self.reply_keys)
            or validate_metrics_reply(reply.content, self.limits, self.weighted_by_key)
            for reply in replies
        ]
        valid = self._record(server_round, EVALUATE, replies, verdicts)
        if not valid:
            return None
        return self.evaluate_metrics_aggr_fn(common_metrics([r.content for r in valid]), self.weighted_by_key)

    def _record(
        self, server_round: int, phase: str, replies: list[Message], verdicts: list[Verdict]
    ) -> list[Message]:
        """Log and record every reply's verdict; return the accepted replies."""
        valid = []
        for reply, verdict in zip(replies, verdicts, strict=True):
            site = self.history.site_name(reply)
            self.history.add(self._site_round(server_round, phase, site, reply, verdict))
            if verdict.accepted:
                valid.append(reply)
            else:
                logger.warning(
                    "round %d %s: dropped the reply of site %r (node %d): %s: %s",
                    server_round, phase, site, self.history.node_of(reply), verdict.code, verdict.detail,
                )
        logger.info("round %d %s: %d of %d replies valid", server_round, phase, len(valid), len(replies))
        return valid

    def _site_round(
        self, server_round: int, phase: str, site: str, reply: Message, verdict: Verdict
    ) -> SiteRound:
        """The history entry of one reply: its numbers under known names if it had any, and the verdict."""
        metrics: dict = {}
        if reply.has_content() and len(reply.content.metric_records) == 1:
            record = next(iter(reply.content.metric_records.values()))
            metrics = {key: value for key, value in record.items() if key in self.reply_keys.metrics}
        return SiteRound(
            round=server_round,
            phase=phase,
            site=site,
            node_id=self.history.node_of(reply),
            status=verdict.code,
            num_examples=metrics.pop(self.weighted_by_key, None),
            update_norm=verdict.update_norm,
            metrics=metrics,
        )


class ValidatingFedProx(ValidatingFedAvg, FedProx):
    """FedProx (proximal_mu reaches the sites as "proximal-mu" in the train config) with validation."""


def _run_id(grid: Grid) -> int:
    """The Flower run's id (0 for a grid without one, as in-process tests use), bound into mask keys."""
    run = getattr(grid, "run", None)
    return int(getattr(run, "run_id", 0) or 0)


def error_verdict(reply: Message) -> Verdict:
    """A site that answered with an error; only its code is kept (its text may hold local paths) and named
    from our own list, except for an HE key mismatch, whose text names just the two key fingerprints."""
    code = reply.error.code
    if code == SiteErrorCode.HE_KEY:
        reason = "".join(c for c in (reply.error.reason or "")[:200] if c.isprintable())
        return Verdict(HE_KEY_MISMATCH, f"error code {code}: {reason}")
    try:
        name = SiteErrorCode(code).reply[1]
    except ValueError:  # not one of ours: a Flower code, or a site of another version
        return Verdict(SITE_ERROR, f"error code {code}")
    return Verdict(SITE_ERROR, f"error code {code} ({name})")


def build_strategy(
    settings: FederationSettings, limits: ValidationLimits, he: EncryptedAggregation | None = None
) -> ValidatingFedAvg:
    """The configured strategy: every round samples `fraction` of at least `min_sites` sites; with `he`
    it aggregates encrypted updates."""
    common = dict(
        limits=limits,
        he=he,
        min_valid_replies=settings.min_valid_replies,
        fraction_train=settings.fraction,
        fraction_evaluate=settings.fraction,
        min_train_nodes=settings.min_sites,
        min_evaluate_nodes=settings.min_sites,
        min_available_nodes=settings.min_sites,
    )
    if settings.strategy == "fedprox":
        return ValidatingFedProx(proximal_mu=settings.proximal_mu, **common)
    return ValidatingFedAvg(**common)
