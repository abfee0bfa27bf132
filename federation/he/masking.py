"""Pairwise masking for secure aggregation (Bonawitz et al., CCS 2017): the cryptographic side only.

Each site makes a fresh X25519 key pair per round and advertises its public key, signed with its ECDSA
node key over a round context (run, round, HE key fingerprint), so an advertisement cannot be forged or
replayed into another round. Every pair of sites derives the same 32-byte seed (X25519, then HKDF-SHA256
bound to the context and both node ids) and expands it with ChaCha20 into integers modulo a plaintext
modulus t. The site with the smaller node id adds the expansion, the other subtracts it, so the masks
cancel exactly in the sum of all uploads. When a site drops out after masking, each survivor adds a
dropout correction that cancels its terms with the dropped site. Pure NumPy and `cryptography`: no
encryption library, no Flower, no PyTorch here.
"""

from __future__ import annotations

import struct
from collections.abc import Collection, Mapping
from dataclasses import dataclass

import numpy as np
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from federation.keys import fingerprint
from segmentation.errors import FedSegError

MASK_PUBLIC_KEY_BYTES = 32
SEED_BYTES = 32
MAX_MODULUS = 2**32

_CONTEXT_TAG = b"fedseg/secagg/round-context/v1"
_ADVERTISEMENT_TAG = b"fedseg/secagg/advertisement/v1"
_SEED_TAG = b"fedseg/secagg/pair-seed/v1"
_CHACHA_NONCE = bytes(16)  # 4-byte block counter + 12-byte nonce, all zero: each seed keys one stream only
# The ECDSA hash that matches each NIST curve's strength (as OpenSSH's ecdsa-sha2-nistp* signatures do).
_CURVE_HASHES: dict[str, type[hashes.HashAlgorithm]] = {
    "secp256r1": hashes.SHA256,
    "secp384r1": hashes.SHA384,
    "secp521r1": hashes.SHA512,
}


class MaskError(FedSegError):
    """A malformed advertisement or seed exchange, or a signature that does not verify."""


def _u64(value: int, what: str) -> bytes:
    """A non-negative integer below 2**64 as 8 big-endian bytes (Flower's node and run ids are uint64)."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**64:
        raise ValueError(f"{what} must be an integer in [0, 2**64), got {value!r}")
    return struct.pack(">Q", value)


def _field(data: bytes) -> bytes:
    """A length-prefixed field, so concatenated fields cannot be re-split differently."""
    return struct.pack(">I", len(data)) + data


def round_context(run_id: int, server_round: int, he_fingerprint: str) -> bytes:
    """Binds signatures and seeds to one run, round and HE key (so nothing replays into another round)."""
    return (
        _field(_CONTEXT_TAG)
        + _field(_u64(run_id, "run id"))
        + _field(_u64(server_round, "server round"))
        + _field(he_fingerprint.encode("utf-8"))
    )


@dataclass(frozen=True)
class Advertisement:
    """What a site publishes in a round: its X25519 public key, signed by its node key when it has one."""

    node_id: int
    public_key: bytes  # raw 32-byte X25519 public key
    node_key: str  # the node's ECDSA public key as an OpenSSH line, "" when the site has no node key
    signature: bytes  # ECDSA over signed_message(...) with the node key's curve hash; b"" when unsigned


def signed_message(context: bytes, node_id: int, public_key: bytes) -> bytes:
    """A domain tag, then length-prefixed fields (unambiguous): no other message signs to the same bytes."""
    return (
        _field(_ADVERTISEMENT_TAG)
        + _field(bytes(context))
        + _field(_u64(node_id, "node id"))
        + _field(bytes(public_key))
    )


def _curve_hash(curve: ec.EllipticCurve) -> hashes.HashAlgorithm:
    """The hash for ECDSA on `curve`; only the NIST curves that OpenSSH and Flower use are accepted."""
    algorithm = _CURVE_HASHES.get(curve.name)
    if algorithm is None:
        raise MaskError(f"ECDSA node keys must be on P-256, P-384 or P-521, not {curve.name}")
    return algorithm()


class MaskKeyPair:
    """A site's key-agreement key pair for one round; never reused, so seeds are fresh every round."""

    def __init__(self, private_key: X25519PrivateKey) -> None:
        self._private_key = private_key

    @classmethod
    def generate(cls) -> MaskKeyPair:
        """A fresh X25519 key pair from the operating system's random source."""
        return cls(X25519PrivateKey.generate())

    @classmethod
    def from_private_bytes(cls, data: bytes) -> MaskKeyPair:
        """The key pair kept between a round's messages (private_bytes); MaskError when not one."""
        try:
            return cls(X25519PrivateKey.from_private_bytes(data))
        except (ValueError, TypeError):
            raise MaskError("the kept mask key is not a raw X25519 private key") from None

    def private_bytes(self) -> bytes:
        """The raw private key, for the site's own state between the training reply and the upload."""
        return self._private_key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                                               serialization.NoEncryption())

    @property
    def public_key(self) -> bytes:
        """The raw 32-byte X25519 public key, as advertised to the other sites."""
        return self._private_key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )

    def advertise(
        self, node_id: int, context: bytes, node_key: ec.EllipticCurvePrivateKey | None
    ) -> Advertisement:
        """The public key signed with the node key (so the server cannot substitute its own key)."""
        public_key = self.public_key
        if node_key is None:
            return Advertisement(node_id, public_key, "", b"")
        message = signed_message(context, node_id, public_key)
        signature = node_key.sign(message, ec.ECDSA(_curve_hash(node_key.curve)))
        line = node_key.public_key().public_bytes(
            serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
        )
        return Advertisement(node_id, public_key, line.decode("ascii"), signature)

    def pair_seed(self, own_node: int, peer: Advertisement, context: bytes) -> bytes:
        """X25519 exchange, then HKDF-SHA256 (32 bytes, info = tag + context + the two node ids in
        ascending order): both sides get the same seed, and it is bound to this round and this pair."""
        if own_node == peer.node_id:
            raise MaskError(f"node {own_node} cannot derive a mask seed with itself")
        if not isinstance(peer.public_key, bytes) or len(peer.public_key) != MASK_PUBLIC_KEY_BYTES:
            raise MaskError(f"node {peer.node_id}'s mask public key is not {MASK_PUBLIC_KEY_BYTES} bytes")
        try:
            low, high = sorted((_u64(own_node, "own node id"), _u64(peer.node_id, "peer node id")))
            shared = self._private_key.exchange(X25519PublicKey.from_public_bytes(peer.public_key))
        except ValueError as error:  # an all-zero shared secret: a low-order (malicious) peer key
            raise MaskError(f"node {peer.node_id}'s mask public key is invalid ({error})") from None
        info = _field(_SEED_TAG) + _field(bytes(context)) + _field(low) + _field(high)
        return HKDF(algorithm=hashes.SHA256(), length=SEED_BYTES, salt=None, info=info).derive(shared)


def verify_advertisement(
    advertisement: Advertisement, context: bytes, pinned: Collection[str] | None
) -> None:
    """MaskError (one line, naming the node id) unless the advertisement is well formed and, where a node
    key is present or required (`pinned`: the admitted node key fingerprints 'SHA256:...'), signed by it
    for this context: a server that swaps keys could otherwise read every site's update."""
    node, public_key = advertisement.node_id, advertisement.public_key
    node_key, signature = advertisement.node_key, advertisement.signature
    if isinstance(node, bool) or not isinstance(node, int) or not 0 <= node < 2**64:
        raise MaskError(f"advertisement has an invalid node id {node!r}")
    if not isinstance(public_key, bytes) or len(public_key) != MASK_PUBLIC_KEY_BYTES:
        raise MaskError(f"node {node}'s mask public key is not {MASK_PUBLIC_KEY_BYTES} bytes")
    if not isinstance(node_key, str) or not isinstance(signature, bytes):
        raise MaskError(f"node {node}'s advertisement has a malformed node key or signature")
    if not node_key:
        if pinned is not None:
            raise MaskError(f"node {node}'s mask key is unsigned, but this federation pins node keys")
        if signature:
            raise MaskError(f"node {node}'s advertisement carries a signature but no node key")
        return
    try:
        key = serialization.load_ssh_public_key(node_key.encode("utf-8"))
    except (ValueError, UnsupportedAlgorithm, UnicodeError):
        raise MaskError(f"node {node}'s node key is not an OpenSSH public key") from None
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise MaskError(f"node {node}'s node key is not an ECDSA key")
    if pinned is not None and fingerprint(key) not in pinned:
        raise MaskError(f"node {node}'s node key {fingerprint(key)} is not one of the admitted keys")
    if key.curve.name not in _CURVE_HASHES:
        raise MaskError(f"node {node}'s node key is not on P-256, P-384 or P-521")
    try:
        key.verify(signature, signed_message(context, node, public_key), ec.ECDSA(_curve_hash(key.curve)))
    except InvalidSignature:
        raise MaskError(f"node {node}'s mask key signature does not verify for this round") from None


def _check_modulus(modulus: int) -> None:
    """Moduli below 2**32 keep every sum of two residues exact in uint64."""
    if isinstance(modulus, bool) or not isinstance(modulus, int) or not 2 <= modulus < MAX_MODULUS:
        raise ValueError(f"modulus must be an integer in [2, 2**32), got {modulus!r}")


def _check_length(length: int) -> None:
    if isinstance(length, bool) or not isinstance(length, int) or length < 0:
        raise ValueError(f"length must be a non-negative integer, got {length!r}")


def expand(seed: bytes, length: int, modulus: int) -> np.ndarray:
    """`length` integers uniform modulo `modulus` (uint64): the ChaCha20 keystream (zero nonce) read as
    little-endian uint64 words, each reduced modulo `modulus`. Reducing a uniform 64-bit word leaves a
    statistical distance below modulus / 2**64, i.e. < 2**-32 for modulus < 2**32: negligible, and no
    rejection sampling, so both sides of a pair always read the same words."""
    _check_modulus(modulus)
    _check_length(length)
    if not isinstance(seed, bytes) or len(seed) != SEED_BYTES:
        raise ValueError(f"a mask seed must be {SEED_BYTES} bytes")
    encryptor = Cipher(algorithms.ChaCha20(seed, _CHACHA_NONCE), mode=None).encryptor()
    keystream = encryptor.update(bytes(8 * length)) + encryptor.finalize()
    return np.frombuffer(keystream, dtype="<u8").astype(np.uint64) % np.uint64(modulus)


def pairwise_mask(own_node: int, seeds: Mapping[int, bytes], length: int, modulus: int) -> np.ndarray:
    """sum over peers of +expand(seed) when own_node < peer else -expand(seed), modulo modulus (uint64).
    With every participant's mask added, the masks cancel exactly (each pair adds and subtracts once)."""
    _check_modulus(modulus)
    _check_length(length)
    mod = np.uint64(modulus)
    mask = np.zeros(length, dtype=np.uint64)
    for peer, seed in seeds.items():
        if peer == own_node:
            raise ValueError(f"node {own_node} has a mask seed with itself")
        term = expand(seed, length, modulus)
        if own_node < peer:
            mask = (mask + term) % mod
        else:
            mask = (mask + mod - term) % mod  # terms are < modulus < 2**32: no uint64 wrap-around
    return mask


def dropout_correction(
    own_node: int, dropped_seeds: Mapping[int, bytes], length: int, modulus: int
) -> np.ndarray:
    """What a surviving site adds to the sum so that its masks with the dropped peers cancel: minus its
    own mask terms with them, modulo modulus (the dropped sites' own halves never reached the sum)."""
    terms = pairwise_mask(own_node, dropped_seeds, length, modulus)  # validates modulus and length
    mod = np.uint64(modulus)
    return (mod - terms) % mod
