"""Who masks with whom in a round: the roster of signed key advertisements, and a site's rules for it.

The server relays the roster (every site's Advertisement for the round) in the config of the training
message or, in a run's first round, of the upload query. A site masks only with a roster it accepts:
well formed, every advertisement verified (against the pinned node keys of the federation when the site
has them, so a server cannot invent sites), its own advertisement unchanged, no node twice, and at least
`min_sites` sites, so a server cannot shrink a round to the victim and one colluding site. Flower-free:
configs are plain mappings.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from federation.he.masking import Advertisement, MaskError, verify_advertisement
from federation.he.masking_settings import MaskingSettings

# The advertisement a site sends with its replies, in a ConfigRecord of this name: its mask key for a
# round (this one, or the next when the reply carries its upload), signed for that round.
ADVERTISEMENT_RECORD = "mask-key"
PUBLIC_KEY = "public-key"
NODE_KEY = "node-key"
SIGNATURE = "signature"
ROUND_KEY = "round"
ADVERTISEMENT_FIELDS = (PUBLIC_KEY, NODE_KEY, SIGNATURE)
# The roster in the upload and unmask queries' config: four lists, one entry per site.
ROSTER_NODES, ROSTER_PUBLIC_KEYS = "mask-nodes", "mask-public-keys"
ROSTER_NODE_KEYS, ROSTER_SIGNATURES = "mask-node-keys", "mask-signatures"
# The other names of the protocol: the queries after training, and their config values.
UPLOAD_QUERY, UNMASK_QUERY = "he-upload", "he-unmask"
TOTAL_KEY = "he-total"  # the round's N: the roster's examples, by which every site divides its weight
NODE_KEY_IN_ROUND = "mask-node"  # the recipient's node id, as the server names it in the roster
RUN_KEY = "mask-run"  # the server's run id, bound into every signature and seed
DROPPED_KEY = "mask-dropped"  # the unmask query's roster nodes whose uploads the sum lacks


def advertisement_record(advertisement: Advertisement) -> dict[str, Any]:
    """The values of a site's ADVERTISEMENT_RECORD (its node id is the server's to say)."""
    return {PUBLIC_KEY: advertisement.public_key, NODE_KEY: advertisement.node_key,
            SIGNATURE: advertisement.signature}


def advertisement_of(node_id: int, record: Mapping[str, Any]) -> Advertisement:
    """The advertisement in a reply's ADVERTISEMENT_RECORD; MaskError when malformed."""
    if not set(ADVERTISEMENT_FIELDS) <= set(record) <= {*ADVERTISEMENT_FIELDS, ROUND_KEY}:
        raise MaskError(f"node {node_id}'s mask key record is malformed")
    return Advertisement(node_id, *(record[key] for key in ADVERTISEMENT_FIELDS))


def advertised_round(node_id: int, record: Mapping[str, Any]) -> int:
    """The round a reply's mask key is for; MaskError when the record does not say."""
    value = record.get(ROUND_KEY)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise MaskError(f"node {node_id}'s mask key names no round")
    return value


def roster_config(roster: Sequence[Advertisement]) -> dict[str, Any]:
    return {ROSTER_NODES: [ad.node_id for ad in roster],
            ROSTER_PUBLIC_KEYS: [ad.public_key for ad in roster],
            ROSTER_NODE_KEYS: [ad.node_key for ad in roster],
            ROSTER_SIGNATURES: [ad.signature for ad in roster]}


def roster_of(config: Mapping[str, Any]) -> list[Advertisement]:
    """The roster in a query's config; MaskError when it is missing or malformed."""
    try:
        columns = [list(config[key]) for key in (ROSTER_NODES, ROSTER_PUBLIC_KEYS, ROSTER_NODE_KEYS,
                                                 ROSTER_SIGNATURES)]
    except (KeyError, TypeError):
        raise MaskError("the server's roster of mask keys is missing or malformed") from None
    if len({len(column) for column in columns}) != 1:
        raise MaskError("the server's roster of mask keys has columns of different lengths")
    return [Advertisement(*entry) for entry in zip(*columns, strict=True)]


def check_roster(roster: Sequence[Advertisement], own: Advertisement, context: bytes,
                 settings: MaskingSettings) -> None:
    """MaskError (one line) unless this site may mask with `roster` (see the module's rules)."""
    nodes = [ad.node_id for ad in roster]
    if len(set(nodes)) != len(nodes):
        raise MaskError("the roster names a node twice")
    if own not in roster:
        raise MaskError("the roster does not hold this site's own mask key as it sent it")
    if len(roster) < settings.min_sites:
        raise MaskError(f"the roster has {len(roster)} site(s); this site masks with at least "
                        f"{settings.min_sites}")
    pinned = settings.pinned()
    for advertisement in roster:
        verify_advertisement(advertisement, context, pinned)
