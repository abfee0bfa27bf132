"""Encrypted FedAvg in fixed point: sites check, weight and encrypt; the server adds; sites decrypt.

A site with n_k of the round's N examples sends Enc((round(n_k / N * w_k * 2**f) + m_k) mod t) chunk by
chunk, and n_k and N in plaintext; m_k is its pairwise mask (federation.he.masking), or zero. The server
adds the ciphertexts of the accepted sites and, when some site dropped after the masks were fixed, the
survivors' corrections: Enc(sum_k round(n_k / N * w_k * 2**f) mod t), the masks cancelled, with additions
only. The sites decrypt, read the integers as signed, and divide by 2**f and by sum_k n_k / N: FedAvg's
weighted mean of the accepted sites, to within half a step per site, which only holders of the secret
key can read.

The server cannot look inside a ciphertext, so each site checks its own update before encrypting it:
finite, a sane norm, and every value within the context's capacity, so that the weighted sum cannot
wrap around t (which would decrypt to a garbage model).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from federation.he.context import HeContext, seal_bytes, seal_load
from federation.he.packing import chunk_sizes, chunks
from segmentation.errors import FedSegError

if TYPE_CHECKING:
    import tenseal.sealapi as seal

MAX_SUMMANDS = 128  # ciphertexts in one sum: the noise of 40 leaves 3 of the 40-bit prime's bits unused


class CiphertextError(FedSegError):
    """An encrypted sum that is malformed or not made with the expected context and model."""


class UnsafeUpdate(FedSegError):
    """A site's update that must not be encrypted and sent: not finite, too large, or too long."""


@dataclass(frozen=True)
class EncryptedSum:
    """Enc(sum_k n_k / N * w_k) over some sites as serialized BFV chunks, sum_k n_k (`weight`) and the
    round's N (`total`), both in plaintext."""

    chunks: tuple[bytes, ...]
    weight: int
    total: int

    @property
    def nbytes(self) -> int:
        return sum(len(chunk) for chunk in self.chunks)


@dataclass(frozen=True)
class UpdateLimits:
    """What a site checks before encrypting: its update ||w - w_global|| may be at most
    max_relative_norm times max(||w_global||, 1); larger means local training diverged."""

    max_relative_norm: float = 100.0

    def __post_init__(self) -> None:
        if not self.max_relative_norm > 0:
            raise ValueError(f"max_relative_norm must be positive, got {self.max_relative_norm}")


def check_weight(weight: object, total: object) -> None:
    """UnsafeUpdate unless 1 <= weight <= total are integers: a share of the round's examples."""
    for name, value in (("number of examples", weight), ("round's number of examples", total)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise UnsafeUpdate(f"the {name} must be a positive integer, got {value!r}")
    if weight > total:  # type: ignore[operator]
        raise UnsafeUpdate(f"this site's {weight} examples are more than the round's {total}")


def check_update(vector: np.ndarray, reference: np.ndarray, capacity: float,
                 limits: UpdateLimits = UpdateLimits()) -> None:
    """Refuse (UnsafeUpdate) an update a site must not send: its last chance, as the server sees no value.

    vector: the site's new weights, flat; reference: the global weights it started from; capacity: the
    largest |value| the context can add up without wrapping around.
    """
    if vector.shape != reference.shape:
        raise UnsafeUpdate(f"the update has {vector.size} values, the global model {reference.size}")
    if not np.isfinite(vector).all():
        raise UnsafeUpdate(f"the update holds {int(np.sum(~np.isfinite(vector)))} NaN or Inf value(s)")
    norm, scale = float(np.linalg.norm(vector - reference)), max(float(np.linalg.norm(reference)), 1.0)
    if norm > limits.max_relative_norm * scale:
        raise UnsafeUpdate(f"the update's norm {norm:.4g} is above {limits.max_relative_norm:g} x "
                           f"{scale:.4g} (the global model's); local training diverged")
    largest = float(np.max(np.abs(vector), initial=0.0))
    if not largest <= capacity:
        raise UnsafeUpdate(f"its largest weight {largest:.4g} exceeds what encrypted aggregation can add up "
                           f"({capacity:.4g})")


def quantise(context: HeContext, vector: np.ndarray, weight: int, total: int) -> np.ndarray:
    """round(weight / total * vector * 2**f) modulo t, as uint64: the integers a site encrypts."""
    scaled = np.rint(np.asarray(vector, dtype=np.float64) * (weight / total) / context.step).astype(np.int64)
    return np.mod(scaled, context.plain_modulus).astype(np.uint64)


def encrypt_integers(context: HeContext, values: np.ndarray) -> tuple[bytes, ...]:
    """Seeded secret-key ciphertexts of integers modulo t, `context.slots` per chunk."""
    import tenseal.sealapi as seal

    encrypted = []
    for piece in chunks(values, context.slots):
        plain = seal.Plaintext()
        context.encoder.encode(piece.tolist(), plain)
        encrypted.append(seal_bytes(context.encryptor.encrypt_symmetric(plain)))
    return tuple(encrypted)


def encrypt_share(context: HeContext, vector: np.ndarray, weight: int, total: int,
                  mask: np.ndarray | None = None) -> EncryptedSum:
    """Enc(weight / total * vector + mask): a site's upload (check_weight and check_update it first)."""
    values = quantise(context, vector, weight, total)
    if mask is not None:
        values = (values + mask) % np.uint64(context.plain_modulus)
    return EncryptedSum(encrypt_integers(context, values), int(weight), int(total))


def load_chunk(context: HeContext, data: bytes) -> seal.Ciphertext:
    """One serialized chunk as a ciphertext under the context's parameters; CiphertextError otherwise."""
    import tenseal.sealapi as seal

    try:
        ciphertext = seal_load(seal.Ciphertext, data, context.seal)
    except (ValueError, RuntimeError, TypeError):
        raise CiphertextError("a chunk is not a BFV ciphertext of the federation's parameters") from None
    if ciphertext.parms_id() != context.parms_id or ciphertext.size() != 2 or ciphertext.is_ntt_form():
        raise CiphertextError("a chunk was not encrypted with the federation's BFV parameters")
    return ciphertext


def check_chunks(context: HeContext, chunk_data: Sequence[bytes], size: int) -> list[seal.Ciphertext]:
    """The chunks of a `size`-value vector, loaded and checked."""
    expected = len(chunk_sizes(size, context.slots))
    if len(chunk_data) != expected:
        raise CiphertextError(f"{len(chunk_data)} chunks, the model needs {expected}")
    return [load_chunk(context, data) for data in chunk_data]


def check_sum(context: HeContext, encrypted: EncryptedSum, size: int) -> list[seal.Ciphertext]:
    """The chunks of an encrypted sum of a `size`-value model, loaded and checked, with its weights."""
    try:
        check_weight(encrypted.weight, encrypted.total)
    except UnsafeUpdate as error:
        raise CiphertextError(str(error)) from None
    return check_chunks(context, encrypted.chunks, size)


def add_checked(context: HeContext, sums: Sequence[list[seal.Ciphertext]], weight: int, total: int
                ) -> EncryptedSum:
    """The server's whole aggregation on chunks loaded by check_chunks: add them chunk by chunk."""
    if not sums:
        raise ValueError("nothing to add")
    if len(sums) > MAX_SUMMANDS:
        raise CiphertextError(f"{len(sums)} ciphertexts in one sum; at most {MAX_SUMMANDS} decrypt correctly")
    total_chunks = sums[0]
    for other in sums[1:]:
        for accumulated, chunk in zip(total_chunks, other, strict=True):
            context.evaluator.add_inplace(accumulated, chunk)
    return EncryptedSum(tuple(seal_bytes(chunk) for chunk in total_chunks), weight, total)


def add_encrypted(context: HeContext, sums: Sequence[EncryptedSum], size: int) -> EncryptedSum:
    """Add whole encrypted sums (of one round: the same total) into one."""
    totals = {encrypted.total for encrypted in sums}
    if len(totals) != 1:
        raise CiphertextError(f"the sums divide by different totals {sorted(totals)}")
    loaded = [check_sum(context, encrypted, size) for encrypted in sums]
    return add_checked(context, loaded, sum(encrypted.weight for encrypted in sums), totals.pop())


def decrypt_integers(context: HeContext, chunk_data: Sequence[bytes], size: int) -> np.ndarray:
    """The signed integers (int64, in (-t/2, t/2]) of `size` values encrypted in chunk_data."""
    return _decrypted(context, check_chunks(context, chunk_data, size), size)


def decrypt_average(context: HeContext, encrypted: EncryptedSum, size: int) -> np.ndarray:
    """sum_k n_k w_k / sum_k n_k: the weighted mean as a flat float64 vector (needs the secret key)."""
    if not context.has_secret_key:
        raise CiphertextError("this context holds no secret key and cannot decrypt")
    integers = _decrypted(context, check_sum(context, encrypted, size), size)
    return integers * context.step * (encrypted.total / encrypted.weight)


def _decrypted(context: HeContext, ciphertexts: Sequence[seal.Ciphertext], size: int) -> np.ndarray:
    import tenseal.sealapi as seal

    pieces = []
    for ciphertext, count in zip(ciphertexts, chunk_sizes(size, context.slots), strict=True):
        plain = seal.Plaintext()
        context.decryptor.decrypt(ciphertext, plain)
        pieces.append(np.array(context.encoder.decode_uint64(plain)[:count], dtype=np.int64))
    values = np.concatenate(pieces) if pieces else np.zeros(0, dtype=np.int64)
    modulus = context.plain_modulus
    return np.where(values > modulus // 2, values - modulus, values)
