"""The server's part of secure aggregation: collect masked, encrypted uploads and add what it cannot read.

The roster is every site's signed mask key for the round (verified against the federation's registered
node keys when it has them) and N, their examples. Each upload carries its site's mask key for the next
round, so from the second round on the server sends the roster with the training messages and the
training replies hold the masked uploads (federation.he.site). Otherwise (the first round, a site the
server holds no key of) it makes the roster from the training replies' keys and asks each of those sites
for its upload. It checks every upload's form, never its values. When some roster site's upload is
missing or bad, the masks it shared with the others would spoil the sum, so the server asks the
survivors to remove them: each sends its correction, encrypted, so the server learns nothing new. A
survivor that fails that step is dropped in turn and the rest asked again. With fewer survivors than the
round needs, nothing is added and the model stays as it was.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Collection, Sequence
from typing import Any

from flwr.app import ArrayRecord, ConfigRecord, Message, MessageType, RecordDict

from federation.he.aggregation import CiphertextError, add_checked, check_chunks, check_weight
from federation.he.context import HeContext, HeContextError
from federation.he.masking import Advertisement, MaskError, round_context, verify_advertisement
from federation.he.records import (
    FINGERPRINT_KEY,
    HE_KEY_MISMATCH,
    chunks_from_arrays,
    from_arrays,
    reply_fingerprint,
    to_array_record,
)
from federation.he.roster import (
    ADVERTISEMENT_RECORD,
    DROPPED_KEY,
    NODE_KEY_IN_ROUND,
    RUN_KEY,
    TOTAL_KEY,
    UNMASK_QUERY,
    UPLOAD_QUERY,
    advertised_round,
    advertisement_of,
    roster_config,
)
from federation.task import CONFIG_KEY, QUERY_KEY
from federation.validation import (
    ACCEPTED,
    MALFORMED,
    ValidationLimits,
    Verdict,
    decode_arrays,
    validate_metrics_reply,
)

logger = logging.getLogger(__name__)

BAD_MASK_KEY = "bad-mask-key"  # a training reply whose mask key is malformed or not signed as required
NO_UPLOAD = "no-upload"  # a roster site that sent no upload, or no correction, in time
Send = Callable[[list[Message]], list[Message]]
ErrorVerdict = Callable[[Message], Verdict]


class EncryptedAggregation:
    """The server's side of an HE round. It holds only a public context (a secret one is refused), so it
    can check a ciphertext's form and add ciphertexts, never read them. `size` is the model's number of
    values; `pinned` the fingerprints of the registered node keys, which every mask key must be signed
    with (None: the federation runs without node authentication, and unsigned keys pass).

    It keeps the mask key each site advertised for the next round and its examples, so that a round whose
    sampled sites all have one is configured with its roster: their training replies carry the masked
    uploads, with no upload query (one_phase)."""

    def __init__(self, context: HeContext, size: int, pinned: Collection[str] | None = None) -> None:
        if context.has_secret_key:
            raise HeContextError("the server's HE context holds a secret key; the server must never have it")
        self.context = context
        self.size = size
        self.pinned = None if pinned is None else frozenset(pinned)
        self._advertised: dict[int, tuple[int, Advertisement]] = {}  # node -> (round, its mask key for it)
        self._examples: dict[int, int] = {}  # node -> examples in its last accepted training reply
        self._roster: list[Advertisement] | None = None  # sent with this round's training messages
        self._total = 0

    @property
    def fingerprint(self) -> str:
        return self.context.fingerprint

    @property
    def one_phase(self) -> bool:
        """Whether this round's training messages carried the roster, so their replies hold the uploads."""
        return self._roster is not None

    def roster_config(self, server_round: int, nodes: Sequence[int]) -> dict[str, Any]:
        """The roster and N for this round's training messages when every sampled node advertised a mask
        key for this round; {} otherwise (the uploads then follow an upload query)."""
        advertised = [self._advertised.get(node) for node in nodes]
        self._roster = None
        if not nodes or any(kept is None or kept[0] != server_round for kept in advertised) or any(
                node not in self._examples for node in nodes):
            return {}
        self._roster = [kept[1] for kept in advertised if kept is not None]
        self._total = sum(self._examples[node] for node in nodes)
        return {TOTAL_KEY: self._total, **roster_config(self._roster)}

    def judge_train(self, content: RecordDict, limits: ValidationLimits, weight_key: str) -> Verdict:
        """A training reply of an HE round: numbers, the site's key, and a mask key record; its masked
        upload when the round is one-phase, no arrays otherwise (their form is secure_sum's to check)."""
        if len(content.array_records) != (1 if self.one_phase else 0):
            wanted = "one ArrayRecord, its masked upload" if self.one_phase else "no arrays"
            return Verdict(MALFORMED, f"an encrypted round's training reply must carry {wanted}")
        verdict = validate_metrics_reply(content, limits, weight_key)
        if not verdict.accepted:
            return verdict
        site_key = reply_fingerprint(content)
        if site_key != self.fingerprint:
            return Verdict(HE_KEY_MISMATCH, f"the site's HE key {site_key or 'none'} is not the federation's "
                                            f"{self.fingerprint}")
        if ADVERTISEMENT_RECORD not in content.config_records:
            return Verdict(BAD_MASK_KEY, "the reply carries no mask key")
        return Verdict(ACCEPTED)

    def secure_sum(
        self, server_round: int, run_id: int, replies: Sequence[Message], weight_key: str, send: Send,
        error_verdict: ErrorVerdict, min_sites: int,
    ) -> tuple[ArrayRecord | None, dict[int, Verdict]]:
        """The encrypted sum of the accepted training replies' uploads (an ArrayRecord, or None when
        fewer than `min_sites` uploads survive), and a verdict for each site that fell out on the way."""
        verdicts: dict[int, Verdict] = {}
        examples = {reply.metadata.src_node_id: _examples(reply, weight_key) for reply in replies}
        base = {"server-round": server_round, RUN_KEY: run_id, FINGERPRINT_KEY: self.fingerprint}
        if self._roster is not None:
            roster, total, answers = self._roster, self._total, []
            for reply in replies:  # N counted each site's examples of its last round: they must not change
                node = reply.metadata.src_node_id
                if examples[node] == self._examples.get(node):
                    answers.append(reply)
                else:
                    verdicts[node] = Verdict(MALFORMED, f"{examples[node]} examples where the round's N "
                                                        f"counted {self._examples.get(node)}")
        else:
            roster = self._verified_keys(server_round, run_id, replies, verdicts)
            for node in verdicts:
                examples.pop(node)
            if len(roster) < min_sites:
                return None, verdicts
            total = sum(examples.values())
            started = time.monotonic()
            answers = self._answers(send, examples, {QUERY_KEY: UPLOAD_QUERY, TOTAL_KEY: total,
                                                     **roster_config(roster), **base})
            logger.info("round %d: %d of %d sites sent their masked uploads in %.2f s", server_round,
                        len(answers), len(examples), time.monotonic() - started)
        self._advertised = {}
        loaded = {}
        for reply in answers:
            node = reply.metadata.src_node_id
            verdict, chunks = self._ciphertexts(
                reply, error_verdict, lambda arrays, n=examples[node]: self._upload_chunks(arrays, n, total),
                "encrypted upload")
            if chunks is None:
                verdicts[node] = verdict
                continue
            loaded[node] = chunks
            self._keep_next_key(reply, server_round + 1, run_id, examples[node])
        corrections = self._unmask(send, [ad.node_id for ad in roster], loaded, verdicts, error_verdict,
                                   min_sites, {QUERY_KEY: UNMASK_QUERY, **base})
        for node in (ad.node_id for ad in roster):
            verdicts.setdefault(node, Verdict(NO_UPLOAD, "no encrypted upload in time")
                                if node not in loaded else Verdict(ACCEPTED))
        if len(loaded) < min_sites or corrections is None:
            return None, verdicts
        summands = list(loaded.values()) + list(corrections.values())
        weight = sum(examples[node] for node in loaded)
        return to_array_record(add_checked(self.context, summands, weight, total)), verdicts

    def _verified_keys(self, server_round: int, run_id: int, replies: Sequence[Message],
                       verdicts: dict[int, Verdict]) -> list[Advertisement]:
        """The mask keys for this round in the training replies whose signatures verify; a verdict for
        each other reply."""
        roster = []
        for reply in replies:
            try:
                roster.append(self._verified_key(reply, server_round, run_id))
            except MaskError as error:
                verdicts[reply.metadata.src_node_id] = Verdict(BAD_MASK_KEY, str(error))
        return roster

    def _keep_next_key(self, reply: Message, next_round: int, run_id: int, examples: int) -> None:
        """Remember the mask key an upload carries for the next round when its signature verifies (else
        the next round asks that site for its upload again)."""
        try:
            advertisement = self._verified_key(reply, next_round, run_id)
        except MaskError as error:
            logger.warning("round %d: %s; that site uploads after an upload query", next_round, error)
            return
        self._advertised[advertisement.node_id] = (next_round, advertisement)
        self._examples[advertisement.node_id] = examples

    def _verified_key(self, reply: Message, for_round: int, run_id: int) -> Advertisement:
        """The reply's mask key for `for_round`, its signature verified; MaskError otherwise."""
        node = reply.metadata.src_node_id
        record = reply.content.config_records.get(ADVERTISEMENT_RECORD)
        if record is None or advertised_round(node, record) != for_round:
            raise MaskError(f"node {node}'s reply carries no mask key for round {for_round}")
        advertisement = advertisement_of(node, dict(record))
        verify_advertisement(advertisement, round_context(run_id, for_round, self.fingerprint), self.pinned)
        return advertisement

    def _answers(self, send: Send, nodes: Collection[int], config: dict[str, Any]) -> list[Message]:
        """Ask each node the query in `config`; its replies from those nodes, once each."""
        messages = [Message(RecordDict({CONFIG_KEY: ConfigRecord({**config, NODE_KEY_IN_ROUND: node})}),
                            dst_node_id=node, message_type=MessageType.QUERY) for node in nodes]
        replies, seen = [], set()
        for reply in send(messages):
            node = reply.metadata.src_node_id
            if node in nodes and node not in seen:
                seen.add(node)
                replies.append(reply)
        return replies

    def _ciphertexts(self, reply: Message, error_verdict: ErrorVerdict,
                     read: Callable[[dict[str, Any]], Sequence[bytes]], what: str
                     ) -> tuple[Verdict, list[Any] | None]:
        """The chunks `read` takes from a reply's arrays, loaded and checked, or the verdict against it."""
        if reply.has_error():
            return error_verdict(reply), None
        arrays = self._arrays(reply.content)
        if isinstance(arrays, Verdict):
            return arrays, None
        try:
            return Verdict(ACCEPTED), check_chunks(self.context, read(arrays), self.size)
        except (CiphertextError, ValueError) as error:
            return Verdict(MALFORMED, f"{what}: {error}"), None

    @staticmethod
    def _upload_chunks(arrays: dict[str, Any], examples: int, total: int) -> Sequence[bytes]:
        """An upload's chunks, after its weight and N are the ones of its site and round."""
        encrypted = from_arrays(arrays)
        check_weight(encrypted.weight, encrypted.total)
        if (encrypted.weight, encrypted.total) != (examples, total):
            raise CiphertextError(f"the upload is weighted {encrypted.weight} of {encrypted.total}, not "
                                  f"{examples} of {total}")
        return encrypted.chunks

    def _arrays(self, content: RecordDict) -> dict[str, Any] | Verdict:
        """The one ArrayRecord of an upload or correction reply, decoded, after its key is checked."""
        if len(content.array_records) != 1:
            return Verdict(MALFORMED, "expected exactly one ArrayRecord")
        if reply_fingerprint(content) != self.fingerprint:
            return Verdict(HE_KEY_MISMATCH, "the reply names another HE key")
        return decode_arrays(next(iter(content.array_records.values())))

    def _unmask(
        self, send: Send, roster: list[int], loaded: dict[int, list[Any]], verdicts: dict[int, Verdict],
        error_verdict: ErrorVerdict, min_sites: int, config: dict[str, Any],
    ) -> dict[int, list[Any]] | None:
        """The survivors' corrections for the roster sites missing from `loaded` ({} when none is
        missing); a survivor that fails is dropped from `loaded` and the rest are asked again. None when
        fewer than min_sites survive."""
        while len(loaded) >= min_sites:
            dropped = [node for node in roster if node not in loaded]
            if not dropped:
                return {}
            corrections = {}
            for reply in self._answers(send, list(loaded), {**config, DROPPED_KEY: dropped}):
                node = reply.metadata.src_node_id
                verdict, chunks = self._ciphertexts(reply, error_verdict, chunks_from_arrays,
                                                    "malformed mask correction")
                if chunks is None:
                    verdicts[node] = verdict
                else:
                    corrections[node] = chunks
            failed = [node for node in loaded if node not in corrections]
            if not failed:
                return corrections
            for node in failed:
                verdicts.setdefault(node, Verdict(NO_UPLOAD, "no mask correction in time"))
                del loaded[node]
        return None


def _examples(reply: Message, weight_key: str) -> int:
    """The examples a judged training reply reports."""
    return int(next(iter(reply.content.metric_records.values()))[weight_key])
