"""Pairwise masking for secure aggregation: seeds agree, masks cancel, advertisements are checked."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat, load_ssh_public_key

from federation.he.masking import (
    MASK_PUBLIC_KEY_BYTES,
    Advertisement,
    MaskError,
    MaskKeyPair,
    dropout_correction,
    expand,
    pairwise_mask,
    round_context,
    signed_message,
    verify_advertisement,
)
from federation.keys import fingerprint

T = 268369921  # a 28-bit prime plaintext modulus
LENGTH = 5000
NODES = (7, 3, 12, 40)
CONTEXT = round_context(11, 2, "SHA256:he-key")
OTHER_ROUND = round_context(11, 3, "SHA256:he-key")


def openssh(key: ec.EllipticCurvePrivateKey) -> str:
    return key.public_key().public_bytes(Encoding.OpenSSH, PublicFormat.OpenSSH).decode()


def big_int_sum(vectors: list[np.ndarray]) -> list[int]:
    """Element-wise sums in Python integers (no overflow, no modular reduction): independent ground truth."""
    return [sum(int(vector[i]) for vector in vectors) for i in range(len(vectors[0]))]


@pytest.fixture(scope="module")
def node_keys() -> dict[int, ec.EllipticCurvePrivateKey]:
    return {node: ec.generate_private_key(ec.SECP384R1()) for node in NODES}


def run_round(node_keys, context: bytes) -> dict[int, dict[int, bytes]]:
    """Every site advertises, checks every other site's advertisement (pinned) and derives its seeds."""
    pairs = {node: MaskKeyPair.generate() for node in NODES}
    adverts = {node: pairs[node].advertise(node, context, node_keys[node]) for node in NODES}
    pinned = {fingerprint(key.public_key()) for key in node_keys.values()}
    seeds: dict[int, dict[int, bytes]] = {node: {} for node in NODES}
    for node in NODES:
        for peer in NODES:
            if peer != node:
                verify_advertisement(adverts[peer], context, pinned)
                seeds[node][peer] = pairs[node].pair_seed(node, adverts[peer], context)
    return seeds


@pytest.fixture(scope="module")
def seeds(node_keys) -> dict[int, dict[int, bytes]]:
    return run_round(node_keys, CONTEXT)


def test_both_sides_of_a_pair_derive_the_same_seed_and_pairs_differ(seeds):
    for node in NODES:
        for peer in NODES:
            if peer != node:
                assert len(seeds[node][peer]) == 32
                assert seeds[node][peer] == seeds[peer][node]
    all_seeds = {seeds[a][b] for a in NODES for b in NODES if a < b}
    assert len(all_seeds) == 6  # one distinct seed per unordered pair


def test_the_masks_of_all_sites_cancel_in_the_sum(seeds):
    masks = [pairwise_mask(node, seeds[node], LENGTH, T) for node in NODES]
    for mask in masks:
        assert mask.dtype == np.uint64 and mask.shape == (LENGTH,)
        assert int(mask.max()) < T and mask.any()
    assert all(total % T == 0 for total in big_int_sum(masks))
    # Masked updates sum to the plain sum: the server learns only the total.
    rng = np.random.default_rng(0)
    updates = [rng.integers(0, T, LENGTH, dtype=np.uint64) for _ in NODES]
    uploads = [(update + mask) % np.uint64(T) for update, mask in zip(updates, masks, strict=True)]
    assert [total % T for total in big_int_sum(uploads)] == [total % T for total in big_int_sum(updates)]


def test_dropout_corrections_cancel_the_dropped_sites_masks(seeds):
    dropped, survivors = 12, [node for node in NODES if node != 12]
    masks = [pairwise_mask(node, seeds[node], LENGTH, T) for node in survivors]
    uncorrected = big_int_sum(masks)
    assert any(total % T != 0 for total in uncorrected)  # without the correction the sum is not clean
    corrections = [dropout_correction(node, {dropped: seeds[node][dropped]}, LENGTH, T) for node in survivors]
    assert all(total % T == 0 for total in big_int_sum(masks + corrections))


def test_a_single_sites_mask_looks_uniform(seeds):
    n = 40_000
    values = pairwise_mask(3, seeds[3], n, T).astype(np.float64)
    standard_error = T / np.sqrt(12) / np.sqrt(n)
    assert abs(values.mean() - (T - 1) / 2) < 5 * standard_error
    counts = np.bincount((values * 16 // T).astype(np.int64), minlength=16)
    expected = n / 16
    chi_square = float(((counts - expected) ** 2 / expected).sum())
    assert chi_square < 60  # 15 degrees of freedom: p < 1e-6 above 60


def test_another_round_gives_other_seeds_and_uncorrelated_masks(node_keys, seeds):
    other = run_round(node_keys, OTHER_ROUND)
    assert all(other[a][b] != seeds[a][b] for a in NODES for b in NODES if a != b)
    n = 40_000
    first = pairwise_mask(7, seeds[7], n, T).astype(np.float64)
    second = pairwise_mask(7, other[7], n, T).astype(np.float64)
    assert abs(np.corrcoef(first, second)[0, 1]) < 5 / np.sqrt(n)


def test_the_same_key_pairs_in_another_context_give_another_seed(node_keys):
    a, b = MaskKeyPair.generate(), MaskKeyPair.generate()
    advert_b = b.advertise(40, OTHER_ROUND, node_keys[40])
    assert a.pair_seed(7, advert_b, CONTEXT) != a.pair_seed(7, advert_b, OTHER_ROUND)
    assert a.pair_seed(7, advert_b, CONTEXT) != a.pair_seed(8, advert_b, CONTEXT)


# Advertisements ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def signed(node_keys) -> Advertisement:
    return MaskKeyPair.generate().advertise(7, CONTEXT, node_keys[7])


@pytest.fixture(scope="module")
def unsigned() -> Advertisement:
    return MaskKeyPair.generate().advertise(3, CONTEXT, None)


def test_a_good_signed_advertisement_is_accepted_with_and_without_pinning(node_keys, signed):
    assert len(signed.public_key) == MASK_PUBLIC_KEY_BYTES
    assert signed.node_key == openssh(node_keys[7])
    verify_advertisement(signed, CONTEXT, None)
    verify_advertisement(signed, CONTEXT, {fingerprint(node_keys[7].public_key()), "SHA256:someone-else"})
    # Independently: an ECDSA-SHA384 signature over the documented message, checked by the node's public key.
    public = load_ssh_public_key(signed.node_key.encode())
    public.verify(signed.signature, signed_message(CONTEXT, 7, signed.public_key), ec.ECDSA(hashes.SHA384()))


def test_an_unsigned_advertisement_is_accepted_without_pinning(unsigned):
    assert unsigned.node_key == "" and unsigned.signature == b""
    verify_advertisement(unsigned, CONTEXT, None)


@pytest.mark.parametrize(
    ("curve", "algorithm"),
    [(ec.SECP256R1(), hashes.SHA256()), (ec.SECP521R1(), hashes.SHA512())],
)
def test_other_nist_curves_sign_with_their_own_hash(curve, algorithm):
    key = ec.generate_private_key(curve)
    advert = MaskKeyPair.generate().advertise(5, CONTEXT, key)
    verify_advertisement(advert, CONTEXT, {fingerprint(key.public_key())})
    key.public_key().verify(
        advert.signature, signed_message(CONTEXT, 5, advert.public_key), ec.ECDSA(algorithm)
    )


def _ed25519_line() -> str:
    public = ed25519.Ed25519PrivateKey.generate().public_key()
    return public.public_bytes(Encoding.OpenSSH, PublicFormat.OpenSSH).decode()


@pytest.mark.parametrize(
    ("case", "use_pinning"),
    [
        ("tampered public key", False),
        ("tampered public key", True),
        ("another round", False),
        ("another round", True),
        ("another node id", False),
        ("key not pinned", True),
        ("unsigned when pinned", True),
        ("garbage node key", False),
        ("non-ECDSA node key", False),
        ("31-byte public key", False),
        ("signature without node key", False),
        ("signature by another key", False),
    ],
)
def test_bad_advertisements_are_refused(node_keys, signed, unsigned, case, use_pinning):
    pinned = {fingerprint(key.public_key()) for key in node_keys.values()} if use_pinning else None
    context = CONTEXT
    advert = signed
    if case == "tampered public key":
        advert = dataclasses.replace(signed, public_key=MaskKeyPair.generate().public_key)
    elif case == "another round":
        context = OTHER_ROUND
    elif case == "another node id":
        advert = dataclasses.replace(signed, node_id=8)
    elif case == "key not pinned":
        pinned = {fingerprint(node_keys[3].public_key())}
    elif case == "unsigned when pinned":
        advert = unsigned
    elif case == "garbage node key":
        advert = dataclasses.replace(signed, node_key="ecdsa-sha2-nistp384 bm90IGEga2V5")
    elif case == "non-ECDSA node key":
        advert = dataclasses.replace(signed, node_key=_ed25519_line())
    elif case == "31-byte public key":
        advert = dataclasses.replace(signed, public_key=signed.public_key[:31])
    elif case == "signature without node key":
        advert = dataclasses.replace(unsigned, signature=signed.signature)
    elif case == "signature by another key":
        advert = dataclasses.replace(signed, node_key=openssh(node_keys[3]))
    with pytest.raises(MaskError) as raised:
        verify_advertisement(advert, context, pinned)
    message = str(raised.value)
    assert f"node {advert.node_id}" in message and "\n" not in message


# Seeds and expansion ----------------------------------------------------------------------------------


def test_pair_seed_refuses_a_low_order_peer_key_and_itself():
    pair = MaskKeyPair.generate()
    zero = Advertisement(node_id=5, public_key=bytes(32), node_key="", signature=b"")
    with pytest.raises(MaskError, match="node 5"):
        pair.pair_seed(7, zero, CONTEXT)
    own = pair.advertise(7, CONTEXT, None)
    with pytest.raises(MaskError, match="node 7"):
        pair.pair_seed(7, own, CONTEXT)


@pytest.mark.parametrize(
    ("seed", "length", "modulus"),
    [
        (bytes(32), 4, 1),
        (bytes(32), 4, 0),
        (bytes(32), 4, -5),
        (bytes(32), 4, 2**32),
        (bytes(32), -1, T),
        (bytes(31), 4, T),
        (bytes(33), 4, T),
        (bytes(32), 4, True),
    ],
)
def test_expand_refuses_bad_arguments(seed, length, modulus):
    with pytest.raises(ValueError):
        expand(seed, length, modulus)


def test_expand_is_deterministic_and_matches_the_chacha20_test_vector():
    seed = bytes(range(32))
    first, second = expand(seed, 1000, T), expand(seed, 1000, T)
    assert first.dtype == np.uint64 and np.array_equal(first, second)
    assert not np.array_equal(first, expand(bytes(range(1, 33)), 1000, T))
    assert expand(seed, 0, T).shape == (0,)
    # RFC 8439 A.1 test vector #1: the ChaCha20 keystream for the all-zero key, nonce and counter.
    keystream = bytes.fromhex(
        "76b8e0ada0f13d90405d6ae55386bd28bdd219b8a08ded1aa836efcc8b770dc7"
        "da41597c5157488d7724e03fb8d84a376a43b8f41518a11cc387b669b2ee6586"
    )
    modulus = 2**32 - 5
    words = [int.from_bytes(keystream[8 * i : 8 * i + 8], "little") % modulus for i in range(8)]
    assert expand(bytes(32), 8, modulus).tolist() == words


def test_pairwise_mask_signs_follow_the_node_order():
    seed_low, seed_high = bytes([1] * 32), bytes([2] * 32)
    low, high = expand(seed_low, 50, T), expand(seed_high, 50, T)
    mask = pairwise_mask(10, {4: seed_low, 20: seed_high}, 50, T)
    expected = [(-int(a) + int(b)) % T for a, b in zip(low, high, strict=True)]  # -peer 4, +peer 20
    assert mask.tolist() == expected
    correction = dropout_correction(10, {20: seed_high}, 50, T)
    assert correction.tolist() == [(-int(b)) % T for b in high]
    assert pairwise_mask(10, {}, 50, T).tolist() == [0] * 50
    with pytest.raises(ValueError):
        pairwise_mask(10, {10: seed_low}, 50, T)
