"""The federation's plan, made once before round 1 from the sites' fingerprints (FednnU-Net's Federated
Fingerprint Extraction).

The server asks every connected site for the fingerprint of its training data (numbers only: case
geometries, foreground intensity statistics and the range of tissue quantiles inside the bodies) in a
query message. Each reply is judged like any other: one that is malformed, or whose labels are not
server.toml's [model] labels, is left out with a logged reason code, and an error code from a site leaves
that site out too. The accepted fingerprints are merged (Fingerprint.merge: cases pooled, statistics
combined, tissue ranges widened to the lowest low and the highest high) and the plan is made with
nnU-Net's rules for the federation's network, with server.toml's expert overrides. A resumed run never
comes here: it keeps the plan its checkpoint holds.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import reduce
from typing import Any

from flwr.app import ConfigRecord, Message, MessageType, RecordDict
from flwr.serverapp import Grid
from flwr.serverapp.strategy.strategy_utils import sample_nodes

from federation.config import NETWORK_DIMS, ServerConfig
from federation.reply_keys import ReplyKeys, check_reply_keys
from federation.site_history import SiteHistory
from federation.strategy import error_verdict
from federation.task import CONFIG_KEY, DATA_FINGERPRINT_KEY, FINGERPRINT_QUERY, QUERY_KEY
from federation.validation import ACCEPTED, MALFORMED, OTHER_LABELS, Verdict
from segmentation.errors import ConfigError, FedSegError
from segmentation.plan import Fingerprint, Plan, make_plan

logger = logging.getLogger(__name__)

Send = Callable[[Iterable[Message]], list[Message]]


class PlanningError(FedSegError):
    """Too few sites sent a usable fingerprint to make the federation's plan."""


@dataclass(frozen=True)
class SiteFingerprint:
    """One site's answer to the fingerprint query: the verdict, and the fingerprint when it was accepted."""

    site: str
    node_id: int
    verdict: Verdict
    fingerprint: Fingerprint | None = None

    def to_dict(self) -> dict[str, Any]:
        """What the plan event says about the site: its name, status and number of cases (never more)."""
        cases = len(self.fingerprint.cases) if self.fingerprint is not None else None
        return {"site": self.site, "node_id": self.node_id, "status": self.verdict.code, "cases": cases}


def fingerprint_queries(node_ids: Iterable[int]) -> list[Message]:
    """One fingerprint query per site."""
    return [Message(RecordDict({CONFIG_KEY: ConfigRecord({QUERY_KEY: FINGERPRINT_QUERY})}),
                    dst_node_id=node_id, message_type=MessageType.QUERY) for node_id in node_ids]


def judge_fingerprint(reply: Message, labels: dict[int, str]) -> tuple[Verdict, Fingerprint | None]:
    """The verdict on one reply to the query, and its fingerprint when accepted."""
    if reply.has_error():
        return error_verdict(reply), None
    if (verdict := check_reply_keys(reply.content, ReplyKeys())) is not None:
        return verdict, None
    record = reply.content.config_records.get(DATA_FINGERPRINT_KEY)
    text = record.get(DATA_FINGERPRINT_KEY) if record is not None else None
    if not isinstance(text, str):
        return Verdict(MALFORMED, "the reply holds no fingerprint"), None
    try:
        fingerprint = Fingerprint.from_dict(json.loads(text))
    except json.JSONDecodeError:
        return Verdict(MALFORMED, "the fingerprint is not JSON"), None
    except ConfigError as error:
        return Verdict(MALFORMED, str(error)), None
    if not fingerprint.cases:
        return Verdict(MALFORMED, "the fingerprint has no cases"), None
    if fingerprint.labels != labels:
        return Verdict(OTHER_LABELS, f"the site's labels {fingerprint.labels} are not the [model] labels "
                                     f"{labels}"), None
    return Verdict(ACCEPTED), fingerprint


def merged_fingerprint(answers: Sequence[SiteFingerprint]) -> Fingerprint:
    """The accepted fingerprints as one (in node order, so a run's plan does not depend on reply order)."""
    accepted = sorted((answer for answer in answers if answer.fingerprint is not None),
                      key=lambda answer: answer.node_id)
    return reduce(Fingerprint.merge, [answer.fingerprint for answer in accepted])  # type: ignore[arg-type]


def plan_for(fingerprint: Fingerprint, config: ServerConfig) -> Plan:
    """The plan of a (merged) fingerprint for server.toml's network and batch size, with its overrides."""
    model = config.model
    return make_plan(fingerprint, NETWORK_DIMS, model.channels, model.batch_size,
                     spacing=model.target_spacing, patch_size=model.patch_size)


def collect_fingerprints(
    grid: Grid, config: ServerConfig, send: Send, names: SiteHistory
) -> list[SiteFingerprint]:
    """Ask every connected site (once at least [federation] min_sites are) for its fingerprint and judge
    the replies; a site that does not answer within the round timeout is logged and left out."""
    _, node_ids = sample_nodes(grid, config.federation.min_sites, config.federation.min_sites)
    replies = send(fingerprint_queries(node_ids))
    answers = []
    for reply in replies:
        verdict, fingerprint = judge_fingerprint(reply, config.model.label_map)
        answer = SiteFingerprint(names.site_name(reply), names.node_of(reply), verdict, fingerprint)
        if not verdict.accepted:
            logger.warning("fingerprint of site %r (node %d) left out of the plan: %s: %s",
                           answer.site, answer.node_id, verdict.code, verdict.detail)
        answers.append(answer)
    silent = set(node_ids) - {answer.node_id for answer in answers}
    for node_id in sorted(silent):
        logger.warning("node %d sent no fingerprint within %g s; it is left out of the plan", node_id,
                       config.federation.round_timeout)
    return answers


def federated_plan(answers: Sequence[SiteFingerprint], config: ServerConfig) -> tuple[Plan, Fingerprint]:
    """The plan of the accepted fingerprints and their merge; PlanningError with fewer than
    [federation] min_valid_replies of them."""
    accepted = sum(answer.fingerprint is not None for answer in answers)
    needed = config.federation.min_valid_replies
    if accepted < needed:
        raise PlanningError(f"only {accepted} of {len(answers)} site(s) sent a usable fingerprint, fewer "
                            f"than [federation] min_valid_replies = {needed}: no plan can be made (each "
                            "site's reason is in the server log)")
    fingerprint = merged_fingerprint(answers)
    plan = plan_for(fingerprint, config)
    logger.info("plan from %d site(s)' fingerprints (%d cases): %s", accepted, len(fingerprint.cases),
                plan.describe())
    return plan, fingerprint
