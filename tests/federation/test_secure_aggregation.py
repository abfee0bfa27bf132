"""Secure aggregation end to end without Flower processes: sites that train nothing but hold real updates,
the server's EncryptedAggregation asking them for uploads and corrections through an in-memory send.

What must hold (issue 15, part 2): the server's sum decrypts to plaintext FedAvg of the uploading sites;
the server together with one site (its HE key and its mask keys) cannot read another site's upload, also
when a site drops after the masks are fixed; a bad mask-key signature, a lying roster and a malformed
correction are refused with a code while the round goes on without that site.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from fed_replies import content_reply
from flwr.app import ConfigRecord, Error, Message, MessageType, MetricRecord, RecordDict

from federation.he.aggregation import decrypt_average, decrypt_integers, quantise
from federation.he.context import create_context
from federation.he.masking import MaskKeyPair, round_context
from federation.he.masking_settings import MaskingSettings
from federation.he.records import FINGERPRINT_KEY, chunks_from_arrays, from_arrays
from federation.he.roster import (
    ADVERTISEMENT_RECORD,
    NODE_KEY_IN_ROUND,
    ROSTER_NODES,
    RUN_KEY,
    SIGNATURE,
    UPLOAD_QUERY,
)
from federation.he.secure_round import BAD_MASK_KEY, NO_UPLOAD, EncryptedAggregation
from federation.he.site import train_reply, unmask, upload
from federation.strategy import error_verdict
from federation.task import CONFIG_KEY, QUERY_KEY, SiteErrorCode, SiteRoundError
from federation.validation import ACCEPTED, MALFORMED, ValidationLimits

ROUND, RUN = 3, 77
pytestmark = pytest.mark.usefixtures("server_identity")
SIZE = 200_000  # |r| of independent vectors has a standard deviation of 1 / sqrt(SIZE) = 0.0022


@pytest.fixture(scope="module")
def secret():
    return create_context()


@dataclass
class Site:
    """A site with an update, its node key, its state, and what the server asked it."""

    node: int
    weights: np.ndarray
    examples: int
    key: ec.EllipticCurvePrivateKey = field(default_factory=lambda: ec.generate_private_key(ec.SECP384R1()))
    state: RecordDict = field(default_factory=RecordDict)
    asked: list[str] = field(default_factory=list)

    def masking(self, min_sites: int = 3, peer_keys=None) -> MaskingSettings:
        return MaskingSettings(None, peer_keys, min_sites)

    @property
    def fingerprint(self) -> str:
        from federation.keys import fingerprint

        return fingerprint(self.key.public_key())


def make_sites(count: int, seed: int = 0) -> list[Site]:
    rng = np.random.default_rng(seed)
    return [Site(node=100 + 7 * index, weights=rng.normal(0, 0.3, SIZE), examples=int(rng.integers(20, 300)))
            for index in range(count)]


def train_replies(secret, sites: list[Site], monkeypatch, min_sites: int = 3, server_round: int = ROUND,
                  roster: dict | None = None) -> list[Message]:
    """Each site's training reply (numbers, its key, its signed mask key and, when the message carried a
    `roster`, its masked upload), as federation.he.site.train_reply makes it."""
    replies = []
    for site in sites:
        monkeypatch.setattr(MaskingSettings, "node_key", lambda self, key=site.key: key)
        config = {NODE_KEY_IN_ROUND: site.node, RUN_KEY: RUN, **(roster or {})}
        content = train_reply(secret, {"w": site.weights}, {"w": np.full(SIZE, 0.1)}, site.examples, config,
                              server_round, site.masking(min_sites), site.state)
        content["metrics"] = MetricRecord({"num-examples": site.examples})
        content["site"] = ConfigRecord({FINGERPRINT_KEY: secret.fingerprint})
        replies.append(content_reply(content, node_id=site.node, message_type=MessageType.TRAIN))
    return replies


class Network:
    """The send function the server gets: each query goes to its site's handler; `absent` sites never
    answer, `garbage` sites answer their unmask query with a malformed correction."""

    def __init__(self, secret, sites: list[Site], min_sites: int = 3) -> None:
        self.secret, self.sites, self.min_sites = secret, {site.node: site for site in sites}, min_sites
        self.absent: set[int] = set()
        self.garbage: set[int] = set()
        self.uploads: dict[int, RecordDict] = {}  # what the server received: its whole view

    def __call__(self, messages: list[Message]) -> list[Message]:
        replies = []
        for message in messages:
            site = self.sites[message.metadata.dst_node_id]
            config = dict(message.content[CONFIG_KEY])
            site.asked.append(config[QUERY_KEY])
            if site.node in self.absent:
                continue
            try:
                number = config["server-round"]
                if config[QUERY_KEY] == UPLOAD_QUERY:
                    content = upload(self.secret, config, number, site.masking(self.min_sites), site.state)
                    self.uploads[site.node] = content
                elif site.node in self.garbage:
                    content = RecordDict({"arrays": from_upload_garbage()})
                else:
                    content = unmask(self.secret, config, number, site.masking(self.min_sites), site.state)
                content["site"] = ConfigRecord({FINGERPRINT_KEY: self.secret.fingerprint})
            except SiteRoundError as error:
                code, reason = error.code.reply
                replies.append(Message(Error(code=code, reason=reason),
                                       metadata=content_reply(RecordDict(), site.node).metadata))
                continue
            replies.append(content_reply(content, node_id=site.node))
        return replies


def from_upload_garbage():
    from flwr.app import Array, ArrayRecord

    return ArrayRecord({"he/sizes": Array(np.array([5], dtype=np.int64)),
                        "he/data": Array(np.frombuffer(b"hello", dtype=np.uint8))})


def run_round(secret, sites, network, replies, min_sites: int = 3, server=None, server_round: int = ROUND):
    server = server or EncryptedAggregation(secret.public(), SIZE)
    return server.secure_sum(server_round, RUN, replies, "num-examples", network, error_verdict, min_sites)


def fedavg(sites: list[Site]) -> np.ndarray:
    return sum(site.examples * site.weights for site in sites) / sum(site.examples for site in sites)


def decrypted(secret, record) -> np.ndarray:
    return decrypt_average(secret, from_arrays({name: array.numpy() for name, array in record.items()}), SIZE)


def pearson(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(a.astype(np.float64), b.astype(np.float64))[0, 1])


def colluding_views(secret, network: Network, victim: Site, colluder: Site) -> tuple[np.ndarray, np.ndarray]:
    """What the server and one site read of the victim's upload: decrypted with the shared HE key, as it
    is and with the colluder's own mask term with the victim removed (its mask key is in its state)."""
    from federation.he.masking import Advertisement, expand

    upload_arrays = {name: array.numpy() for name, array in network.uploads[victim.node]["arrays"].items()}
    values = decrypt_integers(secret, from_arrays(upload_arrays).chunks, SIZE) % secret.plain_modulus
    kept = colluder.state["fedseg-he-mask"]
    own_keys = MaskKeyPair.from_private_bytes(kept["private-key"])
    index = list(kept[ROSTER_NODES]).index(victim.node)
    peer = Advertisement(victim.node, kept["mask-public-keys"][index], kept["mask-node-keys"][index],
                         kept["mask-signatures"][index])
    term = expand(own_keys.pair_seed(colluder.node, peer, kept["context"]), SIZE, secret.plain_modulus)
    sign = 1 if victim.node < colluder.node else -1  # the victim's term with the colluder
    adjusted = (values.astype(np.int64) - sign * term.astype(np.int64)) % secret.plain_modulus
    return values.astype(np.int64), adjusted


def signed(values: np.ndarray, modulus: int) -> np.ndarray:
    return np.where(values > modulus // 2, values - modulus, values)


def assert_unreadable(secret, network: Network, victim: Site, colluder: Site, total: int) -> None:
    """|Pearson r| < 0.01 between the victim's quantised update and both colluding views."""
    truth = signed(quantise(secret, victim.weights, victim.examples, total).astype(np.int64),
                   secret.plain_modulus)
    for view in colluding_views(secret, network, victim, colluder):
        assert abs(pearson(signed(view, secret.plain_modulus), truth)) < 0.01


def test_the_sum_of_masked_uploads_is_fedavg_and_no_correction_is_asked(secret, monkeypatch):
    sites = make_sites(4)
    network = Network(secret, sites)
    record, verdicts = run_round(secret, sites, network, train_replies(secret, sites, monkeypatch))
    assert all(verdict.code == ACCEPTED for verdict in verdicts.values()) and len(verdicts) == 4
    assert np.max(np.abs(decrypted(secret, record) - fedavg(sites))) < 1e-6
    assert all(site.asked == [UPLOAD_QUERY] for site in sites)


def test_the_server_with_one_site_cannot_read_another_sites_upload(secret, monkeypatch):
    sites = make_sites(4, seed=1)
    network = Network(secret, sites)
    run_round(secret, sites, network, train_replies(secret, sites, monkeypatch))
    total = sum(site.examples for site in sites)
    for victim in sites:
        for colluder in sites:
            if colluder is not victim:
                assert_unreadable(secret, network, victim, colluder, total)


def test_with_two_sites_the_colluding_view_reads_the_other_update(secret, monkeypatch):
    """The attack of the test above is real: where the colluder's term is the victim's only mask (a
    two-site round), the same view reads the victim's update exactly."""
    sites = make_sites(2, seed=10)
    network = Network(secret, sites, min_sites=2)
    run_round(secret, sites, network, train_replies(secret, sites, monkeypatch, min_sites=2), min_sites=2)
    total = sum(site.examples for site in sites)
    _, adjusted = colluding_views(secret, network, sites[0], sites[1])
    truth = quantise(secret, sites[0].weights, sites[0].examples, total)
    assert np.array_equal(adjusted, truth.astype(np.int64))


def test_a_site_that_drops_after_the_masks_are_fixed_does_not_spoil_the_round(secret, monkeypatch):
    sites = make_sites(5, seed=2)
    network = Network(secret, sites)
    network.absent = {sites[3].node}
    record, verdicts = run_round(secret, sites, network, train_replies(secret, sites, monkeypatch))
    survivors = [site for site in sites if site.node not in network.absent]
    assert verdicts[sites[3].node].code == NO_UPLOAD
    assert np.max(np.abs(decrypted(secret, record) - fedavg(survivors))) < 1e-6
    assert all(site.asked == [UPLOAD_QUERY, "he-unmask"] for site in survivors)
    # The colluding view of a survivor stays uncorrelated after the corrections.
    total = sum(site.examples for site in sites)
    assert_unreadable(secret, network, survivors[0], survivors[1], total)


def test_too_few_survivors_skip_the_round(secret, monkeypatch):
    sites = make_sites(3, seed=3)
    network = Network(secret, sites)
    network.absent = {sites[0].node}
    record, verdicts = run_round(secret, sites, network, train_replies(secret, sites, monkeypatch))
    assert record is None and verdicts[sites[0].node].code == NO_UPLOAD


def test_a_malformed_correction_drops_that_survivor_and_the_rest_finish_the_round(secret, monkeypatch):
    sites = make_sites(5, seed=4)
    network = Network(secret, sites)
    network.absent, network.garbage = {sites[0].node}, {sites[1].node}
    record, verdicts = run_round(secret, sites, network, train_replies(secret, sites, monkeypatch))
    assert verdicts[sites[1].node].code == MALFORMED
    assert np.max(np.abs(decrypted(secret, record) - fedavg(sites[2:]))) < 1e-6


def test_a_mask_key_whose_signature_does_not_verify_keeps_that_site_out(secret, monkeypatch):
    sites = make_sites(4, seed=5)
    replies = train_replies(secret, sites, monkeypatch)
    record = replies[0].content[ADVERTISEMENT_RECORD]
    record[SIGNATURE] = bytes(reversed(record[SIGNATURE]))
    network = Network(secret, sites)
    result, verdicts = run_round(secret, sites, network, replies)
    assert verdicts[sites[0].node].code == BAD_MASK_KEY and "signature" in verdicts[sites[0].node].detail
    assert sites[0].asked == []
    assert np.max(np.abs(decrypted(secret, result) - fedavg(sites[1:]))) < 1e-6


def test_a_site_refuses_a_roster_with_a_forged_peer_or_too_few_sites(secret, monkeypatch):
    sites = make_sites(3, seed=6)
    replies = train_replies(secret, sites, monkeypatch)
    server = EncryptedAggregation(secret.public(), SIZE)
    # The server swaps in its own mask key for site 2, signed with a key that is not site 2's.
    impostor = ec.generate_private_key(ec.SECP384R1())
    forged = MaskKeyPair.generate().advertise(sites[2].node, round_context(RUN, ROUND, secret.fingerprint),
                                              impostor)
    roster = [*(ad_of(reply) for reply in replies[:2]), forged]
    from federation.he.roster import TOTAL_KEY, roster_config

    config = {QUERY_KEY: UPLOAD_QUERY, TOTAL_KEY: 300, **roster_config(roster)}
    pinned = {site.fingerprint for site in sites}
    monkeypatch.setattr(MaskingSettings, "pinned", lambda self: pinned)
    with pytest.raises(SiteRoundError) as refused:
        upload(secret, config, ROUND, sites[0].masking(), sites[0].state)
    assert refused.value.code == SiteErrorCode.MASKING
    assert "not one of the admitted keys" in str(refused.value)
    # A roster shrunk to the victim and one other site is refused too.
    config = {QUERY_KEY: UPLOAD_QUERY, TOTAL_KEY: 300, **roster_config(roster[:2])}
    with pytest.raises(SiteRoundError, match="masks with at least 3"):
        upload(secret, config, ROUND, sites[0].masking(), sites[0].state)
    assert server.fingerprint == secret.fingerprint


def ad_of(reply: Message):
    from federation.he.roster import advertisement_of

    return advertisement_of(reply.metadata.src_node_id, dict(reply.content[ADVERTISEMENT_RECORD]))


def test_a_site_uploads_once_per_round(secret, monkeypatch):
    sites = make_sites(3, seed=7)
    network = Network(secret, sites)
    run_round(secret, sites, network, train_replies(secret, sites, monkeypatch))
    from federation.he.roster import TOTAL_KEY, roster_config

    replies_again = {QUERY_KEY: UPLOAD_QUERY, TOTAL_KEY: 1000, **roster_config([])}
    with pytest.raises(SiteRoundError, match="already sent"):
        upload(secret, replies_again, ROUND, sites[0].masking(), sites[0].state)


def test_the_correction_of_an_upload_that_the_server_lacks_is_a_chunk_layout(secret, monkeypatch):
    sites = make_sites(4, seed=8)
    network = Network(secret, sites)
    network.absent = {sites[0].node}
    run_round(secret, sites, network, train_replies(secret, sites, monkeypatch))
    config = {"mask-dropped": [sites[0].node]}
    content = unmask(secret, config, ROUND, sites[1].masking(), sites[1].state)
    chunks = chunks_from_arrays({name: array.numpy() for name, array in content["arrays"].items()})
    correction = decrypt_integers(secret, chunks, SIZE) % secret.plain_modulus
    assert correction.any()  # a real, non-zero mask term travels encrypted


def test_the_train_reply_of_an_encrypted_round_must_carry_a_mask_key_and_no_arrays(secret, monkeypatch):
    sites = make_sites(3, seed=9)
    replies = train_replies(secret, sites, monkeypatch)
    server = EncryptedAggregation(secret.public(), SIZE)
    assert server.judge_train(replies[0].content, ValidationLimits(), "num-examples").code == ACCEPTED
    del replies[1].content[ADVERTISEMENT_RECORD]
    assert server.judge_train(replies[1].content, ValidationLimits(), "num-examples").code == BAD_MASK_KEY


def test_a_site_refuses_corrections_that_would_leave_it_masked_with_too_few_sites(secret, monkeypatch):
    """A server that calls peers dropped to strip a site's masks: each correction reveals the site's masks
    with those peers to a key holder, so the site stops before fewer than min_mask_sites remain, counting
    every site named dropped this round, in one request or several."""
    sites = make_sites(5, seed=11)
    network = Network(secret, sites)
    run_round(secret, sites, network, train_replies(secret, sites, monkeypatch))
    victim = sites[0]
    others = [site.node for site in sites[1:]]
    with pytest.raises(SiteRoundError, match="masked with fewer than 3") as refused:
        unmask(secret, {"mask-dropped": others[:3]}, ROUND, victim.masking(), victim.state)
    assert refused.value.code == SiteErrorCode.MASKING
    unmask(secret, {"mask-dropped": others[:1]}, ROUND, victim.masking(), victim.state)  # 4 remain
    unmask(secret, {"mask-dropped": others[:2]}, ROUND, victim.masking(), victim.state)  # 3 remain
    with pytest.raises(SiteRoundError, match="masked with fewer than 3"):
        unmask(secret, {"mask-dropped": others[2:3]}, ROUND, victim.masking(), victim.state)  # 2 would


def test_from_the_second_round_the_training_replies_carry_the_masked_uploads(secret, monkeypatch):
    """Each upload brings its site's mask key for the next round, so the server sends round 2's roster
    with the training messages: no upload query, and the sum is still FedAvg of the uploading sites; a
    site that fails its training in that round is unmasked by the others."""
    sites = make_sites(4, seed=12)
    server = EncryptedAggregation(secret.public(), SIZE)
    network = Network(secret, sites)
    run_round(secret, sites, network, train_replies(secret, sites, monkeypatch), server=server)
    assert server.roster_config(ROUND + 2, [site.node for site in sites]) == {}  # keys are for round 4
    roster = server.roster_config(ROUND + 1, [site.node for site in sites])
    assert roster["he-total"] == sum(site.examples for site in sites)
    for site in sites:
        site.asked.clear()
        site.weights = site.weights + 0.05
    replies = train_replies(secret, sites[1:], monkeypatch, server_round=ROUND + 1, roster=roster)
    assert all(len(reply.content.array_records) == 1 for reply in replies)
    assert all(server.judge_train(reply.content, ValidationLimits(), "num-examples").code == ACCEPTED
               for reply in replies)
    record, verdicts = run_round(secret, sites, network, replies, server=server, server_round=ROUND + 1)
    assert verdicts[sites[0].node].code == NO_UPLOAD  # its training failed: no reply at all
    assert [site.asked for site in sites[1:]] == [["he-unmask"]] * 3
    assert np.max(np.abs(decrypted(secret, record) - fedavg(sites[1:]))) < 1e-6


def test_a_one_phase_training_message_without_a_kept_mask_key_is_refused(secret, monkeypatch):
    sites = make_sites(3, seed=13)
    server = EncryptedAggregation(secret.public(), SIZE)
    run_round(secret, sites, Network(secret, sites), train_replies(secret, sites, monkeypatch), server=server)
    roster = server.roster_config(ROUND + 1, [site.node for site in sites])
    train_replies(secret, sites, monkeypatch, server_round=ROUND + 1, roster=roster)
    with pytest.raises(SiteRoundError, match=f"keeps no mask key for round {ROUND + 1}"):  # a second message
        train_replies(secret, sites[:1], monkeypatch, server_round=ROUND + 1, roster=roster)


def test_a_site_whose_example_count_changed_sits_out_a_one_phase_round(secret, monkeypatch):
    """N of a one-phase round counts each site's examples of its last round; a site that reports another
    count is dropped for the round (the others unmask it), so the sum's weight never exceeds N."""
    sites = make_sites(4, seed=14)
    server = EncryptedAggregation(secret.public(), SIZE)
    run_round(secret, sites, Network(secret, sites), train_replies(secret, sites, monkeypatch), server=server)
    roster = server.roster_config(ROUND + 1, [site.node for site in sites])
    sites[0].examples += 1
    replies = train_replies(secret, sites, monkeypatch, server_round=ROUND + 1, roster=roster)
    record, verdicts = run_round(secret, sites, Network(secret, sites), replies, server=server,
                                 server_round=ROUND + 1)
    assert verdicts[sites[0].node].code == MALFORMED and "examples where the round's N" in (
        verdicts[sites[0].node].detail)
    assert np.max(np.abs(decrypted(secret, record) - fedavg(sites[1:]))) < 1e-6
