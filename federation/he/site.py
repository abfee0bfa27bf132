"""A site's part of secure aggregation: its key, the global model, and its masked, encrypted update.

A site checks its new weights after training (it is their last check, as the server sees no value).
Masking needs the roster: every site's signed mask key for the round, and N, their examples. Every
masked upload a site sends carries its fresh mask key for the next round, so from the second round on
the server already holds the roster when it sends the training message: the site checks it
(federation.he.roster), derives a seed with every peer, and answers its training message with Enc(n / N
* w + its masks) at once. Without a roster (the first round, or a sampled site the server holds no key
of) the site keeps its update, answers with its numbers and its mask key for this round, and uploads
when the server's upload query brings the roster. Unmask (only when some roster site's upload is
missing): the site sends Enc(minus its masks with those sites), so the sum still decrypts. A mask key
serves one round and a site uploads once per round, so a server cannot ask for the same update under
two rosters.

Before anything is decrypted or sent, the site's key must be the federation's (same fingerprint) and
both sides must agree on encrypting: a site with HE on never sends a plaintext update, whatever the
server asks. Failures are SiteRoundErrors; key mismatches are shareable, since they name only the two
fingerprints, so the server's operator sees them too.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, RecordDict

from federation.he.aggregation import (
    CiphertextError,
    UnsafeUpdate,
    check_update,
    check_weight,
    decrypt_average,
    encrypt_integers,
    encrypt_share,
)
from federation.he.context import HeContext, HeContextError, load_secret_context
from federation.he.masking import (
    Advertisement,
    MaskError,
    MaskKeyPair,
    dropout_correction,
    pairwise_mask,
    round_context,
)
from federation.he.packing import Layout
from federation.he.records import from_arrays, to_array_record
from federation.he.roster import (
    ADVERTISEMENT_FIELDS,
    ADVERTISEMENT_RECORD,
    DROPPED_KEY,
    NODE_KEY_IN_ROUND,
    ROSTER_NODES,
    ROUND_KEY,
    RUN_KEY,
    TOTAL_KEY,
    MaskingSettings,
    advertisement_of,
    advertisement_record,
    check_roster,
    roster_config,
    roster_of,
)
from federation.task import SiteErrorCode, SiteRoundError
from segmentation.errors import ConfigError

_PENDING_KEY = "fedseg-he-update"  # state: the checked update between training and the upload query
_MASK_KEY = "fedseg-he-mask"  # state: the round's mask key pair, examples, and the roster once uploaded
_NEXT_KEY = "fedseg-he-next-mask"  # state: the mask key pair the site advertised for the next round
_UPDATE = "update"
_DROPPED_SO_FAR = "dropped"  # every roster site the server has named dropped this round


def site_context(secret_context: Path | None, federation_fingerprint: str | None) -> HeContext | None:
    """The site's secret context when the federation encrypts (None when neither side does)."""
    if federation_fingerprint is None and secret_context is None:
        return None
    if federation_fingerprint is None:
        raise SiteRoundError(SiteErrorCode.HE_KEY, "the server asks for unencrypted updates but this site "
                                                   "encrypts (site.toml [he] enabled); it sends nothing",
                             shareable=True)
    if secret_context is None:
        raise SiteRoundError(SiteErrorCode.HE_KEY, f"the federation encrypts with HE key "
                                                   f"{federation_fingerprint} but this site has no [he] "
                                                   "secret_context", shareable=True)
    try:
        context = load_secret_context(secret_context)
    except HeContextError as error:
        raise SiteRoundError(SiteErrorCode.SETTINGS, str(error)) from None
    if context.fingerprint != federation_fingerprint:
        raise SiteRoundError(SiteErrorCode.HE_KEY, f"this site's HE key {context.fingerprint} is not the "
                                                   f"federation's {federation_fingerprint}", shareable=True)
    return context


def decrypt_global(context: HeContext, arrays: Mapping[str, np.ndarray],
                   model: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The global model of an encrypted sum, in the names, shapes and dtypes of the site's `model`."""
    layout = Layout.of(model)
    try:
        return layout.unflatten(decrypt_average(context, from_arrays(arrays), layout.size))
    except CiphertextError as error:
        raise SiteRoundError(SiteErrorCode.MODEL, f"unusable encrypted global model: {error}") from None


def _node_and_run(config: Mapping[str, Any]) -> tuple[int, int]:
    """This site's node id as the server names it, and the run's id."""
    node, run = config.get(NODE_KEY_IN_ROUND), config.get(RUN_KEY)
    if not all(isinstance(value, int) and not isinstance(value, bool) and value >= 0
               for value in (node, run)):
        raise SiteRoundError(SiteErrorCode.MASKING, "the server's message names no node or run for masking")
    return node, run


def _new_mask_key(context: HeContext, config: Mapping[str, Any], for_round: int, masking: MaskingSettings,
                  state: RecordDict, slot: str) -> ConfigRecord:
    """A fresh mask key pair for round `for_round`, kept in state[slot]; its signed record for a reply."""
    node, run = _node_and_run(config)
    signing = round_context(run, for_round, context.fingerprint)
    try:
        node_key = masking.node_key()
    except ConfigError as error:
        raise SiteRoundError(SiteErrorCode.SETTINGS, str(error)) from None
    keys = MaskKeyPair.generate()
    record = {**advertisement_record(keys.advertise(node, signing, node_key)), ROUND_KEY: for_round}
    state[slot] = ConfigRecord({"node": node, "context": signing, "private-key": keys.private_bytes(),
                                **record})
    return ConfigRecord(record)


def train_reply(
    context: HeContext, weights: Mapping[str, np.ndarray], global_model: Mapping[str, np.ndarray],
    num_examples: int, config: Mapping[str, Any], server_round: int, masking: MaskingSettings,
    state: RecordDict,
) -> RecordDict:
    """The HE part of a training reply, after the site checked its new weights against the global model
    it started from. When the message carries the round's roster (the server holds every sampled site's
    mask key for this round), the masked, encrypted update and the mask key for the next round; otherwise
    the update waits in `state` and the reply carries the mask key for this round, for the upload query."""
    layout = Layout.of(global_model)
    vector = layout.flatten(weights)
    try:
        check_update(vector, layout.flatten(global_model), context.capacity)
    except UnsafeUpdate as error:
        raise SiteRoundError(SiteErrorCode.UNSAFE_UPDATE, f"not sent: {error}") from None
    if ROSTER_NODES in config:
        kept = state.get(_NEXT_KEY)
        if not isinstance(kept, ConfigRecord) or kept.get(ROUND_KEY) != server_round:
            raise SiteRoundError(SiteErrorCode.MASKING,
                                 f"this site keeps no mask key for round {server_round}")
        state[_MASK_KEY] = ConfigRecord({**kept, "examples": int(num_examples), "size": vector.size})
        del state[_NEXT_KEY]
        reply = _masked_upload(context, vector, config, masking, state)
    else:
        state[_PENDING_KEY] = ArrayRecord({_UPDATE: Array(vector)})
        reply = RecordDict()
        reply[ADVERTISEMENT_RECORD] = _new_mask_key(context, config, server_round, masking, state, _MASK_KEY)
        state[_MASK_KEY].update({"examples": int(num_examples), "size": vector.size})
    return reply


def _kept(state: RecordDict, server_round: int) -> ConfigRecord:
    kept = state.get(_MASK_KEY)
    if not isinstance(kept, ConfigRecord) or kept.get(ROUND_KEY) != server_round:
        raise SiteRoundError(SiteErrorCode.MASKING, f"this site trained no update for round {server_round}")
    return kept


def upload(context: HeContext, config: Mapping[str, Any], server_round: int, masking: MaskingSettings,
           state: RecordDict) -> RecordDict:
    """The masked, encrypted update kept since training, for the roster in `config` (once per round), and
    the mask key for the next round."""
    _kept(state, server_round)
    pending = state.get(_PENDING_KEY)
    if not isinstance(pending, ArrayRecord):
        raise SiteRoundError(SiteErrorCode.MASKING, f"this site already sent its round {server_round} update")
    reply = _masked_upload(context, pending[_UPDATE].numpy(), config, masking, state)
    del state[_PENDING_KEY]  # one upload per round (a roster refused leaves none sent)
    return reply


def _masked_upload(context: HeContext, vector: np.ndarray, config: Mapping[str, Any],
                   masking: MaskingSettings, state: RecordDict) -> RecordDict:
    """Enc(n / N * update + pairwise masks) for the roster in `config`, with the next round's mask key."""
    kept = state[_MASK_KEY]
    keys, own = _own(kept)
    total = config.get(TOTAL_KEY)
    try:
        roster = roster_of(config)
        check_roster(roster, own, kept["context"], masking)
        check_weight(kept["examples"], total)
        seeds = {ad.node_id: keys.pair_seed(own.node_id, ad, kept["context"]) for ad in roster if ad != own}
    except (MaskError, UnsafeUpdate) as error:
        raise SiteRoundError(SiteErrorCode.MASKING, f"refused the round's roster: {error}") from None
    except ConfigError as error:
        raise SiteRoundError(SiteErrorCode.SETTINGS, str(error)) from None
    mask = pairwise_mask(own.node_id, seeds, vector.size, context.plain_modulus)
    encrypted = encrypt_share(context, vector, kept["examples"], total, mask)
    kept.update(roster_config(roster))
    reply = RecordDict({"arrays": to_array_record(encrypted)})
    next_round = kept[ROUND_KEY] + 1
    reply[ADVERTISEMENT_RECORD] = _new_mask_key(context, config, next_round, masking, state, _NEXT_KEY)
    return reply


def unmask(context: HeContext, config: Mapping[str, Any], server_round: int, masking: MaskingSettings,
           state: RecordDict) -> RecordDict:
    """Enc(minus this site's masks with the roster sites the server says are missing from the sum).

    Each correction tells a holder of the key this site's masks with those sites, so the site refuses
    when the sites it would still be masked with (the roster less every site named dropped this round,
    in this request or an earlier one) are fewer than min_mask_sites: a server cannot strip its masks by
    calling peers dropped."""
    kept = _kept(state, server_round)
    if _PENDING_KEY in state:
        raise SiteRoundError(SiteErrorCode.MASKING, "asked to unmask before this site uploaded")
    keys, own = _own(kept)
    dropped = config.get(DROPPED_KEY)
    try:
        roster = {ad.node_id: ad for ad in roster_of(kept)}
        if not isinstance(dropped, list) or not dropped or len(set(dropped)) != len(dropped):
            raise MaskError("the server names no dropped sites, or one twice")
        if own.node_id in dropped or any(node not in roster for node in dropped):
            raise MaskError("the dropped sites are not peers of this site's round")
        named = set(kept.get(_DROPPED_SO_FAR, [])) | set(dropped)
        if len(roster) - len(named) < masking.min_sites:
            raise MaskError(f"{len(named)} of the round's {len(roster)} sites named dropped would leave this "
                            f"site masked with fewer than {masking.min_sites}")
        seeds = {node: keys.pair_seed(own.node_id, roster[node], kept["context"]) for node in dropped}
    except MaskError as error:
        raise SiteRoundError(SiteErrorCode.MASKING, f"refused to unmask: {error}") from None
    kept[_DROPPED_SO_FAR] = sorted(named)
    correction = dropout_correction(own.node_id, seeds, kept["size"], context.plain_modulus)
    return RecordDict({"arrays": to_array_record(encrypt_integers(context, correction))})


def _own(kept: ConfigRecord) -> tuple[MaskKeyPair, Advertisement]:
    """The site's own mask key pair and advertisement of the round, as kept since training."""
    try:
        keys = MaskKeyPair.from_private_bytes(kept["private-key"])
        own = advertisement_of(kept["node"], {key: kept[key] for key in ADVERTISEMENT_FIELDS})
    except (KeyError, MaskError):
        raise SiteRoundError(SiteErrorCode.MASKING, "this site's kept mask key is unusable") from None
    return keys, own
