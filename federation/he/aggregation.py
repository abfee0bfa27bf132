"""Encrypted FedAvg: sites check, pre-weight and encrypt; the server adds; sites decrypt and divide.

A site with n_k examples sends Enc(n_k * w_k) chunk by chunk, and n_k in plaintext. The server adds the
ciphertexts of the accepted sites and their counts: Enc(sum n_k w_k) and N = sum n_k (an EncryptedSum),
with additions only, so no multiplication depth, relinearisation or rescaling is needed. The sites
decrypt and divide by N: FedAvg's weighted mean, which only holders of the secret key can read.

The server cannot look inside a ciphertext, so each site checks its own update before encrypting it:
finite, a sane norm, and small enough that the sum of all sampled sites cannot overflow the
ciphertext's capacity (which would decrypt to a garbage model).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from federation.he.context import HeContext
from federation.he.packing import chunk_sizes, chunks
from segmentation.errors import FedSegError

if TYPE_CHECKING:
    import tenseal as ts


class CiphertextError(FedSegError):
    """An encrypted sum that is malformed or not made with the expected context and model."""


class UnsafeUpdate(FedSegError):
    """A site's update that must not be encrypted and sent: not finite, too large, or too long."""


@dataclass(frozen=True)
class EncryptedSum:
    """Enc(sum_k n_k * w_k) over some sites as serialized CKKS chunks, and sum_k n_k in plaintext."""

    chunks: tuple[bytes, ...]
    weight: int

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


def check_update(
    vector: np.ndarray, reference: np.ndarray, weight: int, max_magnitude: float,
    limits: UpdateLimits = UpdateLimits(),
) -> None:
    """Refuse (UnsafeUpdate) an update a site must not send: its last chance, as the server sees no value.

    vector: the site's new weights, flat; reference: the global weights it started from; weight: its
    number of examples; max_magnitude: the largest |weight * value| this site may encrypt (the server
    gives each sampled site an equal share of the ciphertext capacity).
    """
    if isinstance(weight, bool) or not isinstance(weight, (int, np.integer)) or weight < 1:
        raise UnsafeUpdate(f"the number of examples must be a positive integer, got {weight!r}")
    if vector.shape != reference.shape:
        raise UnsafeUpdate(f"the update has {vector.size} values, the global model {reference.size}")
    if not np.isfinite(vector).all():
        raise UnsafeUpdate(f"the update holds {int(np.sum(~np.isfinite(vector)))} NaN or Inf value(s)")
    norm, scale = float(np.linalg.norm(vector - reference)), max(float(np.linalg.norm(reference)), 1.0)
    if norm > limits.max_relative_norm * scale:
        raise UnsafeUpdate(f"the update's norm {norm:.4g} is above {limits.max_relative_norm:g} x "
                           f"{scale:.4g} (the global model's); local training diverged")
    largest = float(np.max(np.abs(vector), initial=0.0)) * int(weight)
    if not largest <= max_magnitude:
        raise UnsafeUpdate(f"{weight} examples x the largest weight {largest / int(weight):.4g} = "
                           f"{largest:.4g} exceeds this site's share {max_magnitude:.4g} of the ciphertext "
                           "capacity")


def encrypt_weighted(context: HeContext, vector: np.ndarray, weight: int) -> EncryptedSum:
    """Enc(weight * vector), one ciphertext per `context.slots` values (check_update it first)."""
    import tenseal as ts

    weighted = np.asarray(vector, dtype=np.float64) * int(weight)
    encrypted = tuple(ts.ckks_vector(context.tenseal, piece.tolist()).serialize()
                      for piece in chunks(weighted, context.slots))
    return EncryptedSum(encrypted, int(weight))


def load_chunk(context: HeContext, data: bytes, size: int) -> ts.CKKSVector:
    """One serialized chunk as a ciphertext of `size` values under the context's parameters and scale."""
    import tenseal as ts

    try:
        vector = ts.ckks_vector_from(context.tenseal, data)
        ciphertexts = vector.ciphertext()
    except (ValueError, RuntimeError, TypeError):
        raise CiphertextError("a chunk is not a TenSEAL CKKS vector") from None
    if vector.size() != size or len(ciphertexts) != 1:
        raise CiphertextError(f"a chunk holds {vector.size()} values in {len(ciphertexts)} ciphertext(s), "
                              f"not {size} in one")
    ciphertext = ciphertexts[0]
    if (ciphertext.parms_id() != context.parms_id or ciphertext.size() != 2 or not ciphertext.is_ntt_form()
            or not math.isclose(ciphertext.scale, context.scale)):
        raise CiphertextError("a chunk was not encrypted with the federation's CKKS parameters and scale")
    return vector


def check_sum(context: HeContext, encrypted: EncryptedSum, size: int) -> list[ts.CKKSVector]:
    """The chunks of an encrypted sum of a `size`-value model, loaded and checked."""
    sizes = chunk_sizes(size, context.slots)
    if len(encrypted.chunks) != len(sizes):
        raise CiphertextError(f"{len(encrypted.chunks)} chunks, the model needs {len(sizes)}")
    if isinstance(encrypted.weight, bool) or not isinstance(encrypted.weight, int) or encrypted.weight < 1:
        raise CiphertextError(f"the weight must be a positive integer, got {encrypted.weight!r}")
    return [load_chunk(context, data, count) for data, count in zip(encrypted.chunks, sizes, strict=True)]


def add_encrypted(context: HeContext, sums: Sequence[EncryptedSum], size: int) -> EncryptedSum:
    """The server's whole aggregation: add the ciphertexts chunk by chunk and the weights."""
    return add_checked([check_sum(context, encrypted, size) for encrypted in sums], [s.weight for s in sums])


def add_checked(sums: Sequence[list[ts.CKKSVector]], weights: Sequence[int]) -> EncryptedSum:
    """add_encrypted on sums already loaded and checked by check_sum (the first one is added into)."""
    if not sums:
        raise ValueError("nothing to add")
    total = sums[0]
    for other in sums[1:]:
        for accumulated, chunk in zip(total, other, strict=True):
            accumulated.add_(chunk)
    return EncryptedSum(tuple(chunk.serialize() for chunk in total), sum(weights))


def decrypt_average(context: HeContext, encrypted: EncryptedSum, size: int) -> np.ndarray:
    """sum n_k w_k / sum n_k: the weighted mean as a flat float64 vector (needs the secret key)."""
    if not context.has_secret_key:
        raise CiphertextError("this context holds no secret key and cannot decrypt")
    values = [np.asarray(chunk.decrypt()) for chunk in check_sum(context, encrypted, size)]
    return np.concatenate(values) / encrypted.weight
