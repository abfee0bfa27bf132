"""Encrypted sums in Flower's records.

An EncryptedSum travels as four named arrays: "he/weight" (the examples it sums, int64 scalar),
"he/total" (the round's N it was divided by, int64 scalar), "he/sizes" (the byte length of each
serialized ciphertext, int64) and "he/data" (the ciphertexts back to back, uint8). Flower moves and
stores every Array as an object of its own, so one Array per ciphertext (hundreds per model) cost the
SuperLink more than the cryptography; four per message do not. The global model of an encrypted round
and a site's encrypted update have the same form, so one ArrayRecord layout serves both directions; a
survivor's mask correction is just the last two. The round's ConfigRecord names the federation's key
("he-fingerprint"); a site names its own key in its reply's site record.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from itertools import accumulate

import numpy as np
from flwr.app import Array, ArrayRecord, RecordDict

from federation.he.aggregation import CiphertextError, EncryptedSum

WEIGHT_KEY = "he/weight"
TOTAL_KEY = "he/total"
SIZES_KEY = "he/sizes"
DATA_KEY = "he/data"
FINGERPRINT_KEY = "he-fingerprint"
HE_KEY_MISMATCH = "he-key-mismatch"  # the reason code of a reply encrypted under another key
_CHUNKS_LAYOUT = {SIZES_KEY: (np.int64, 1), DATA_KEY: (np.uint8, 1)}  # dtype, ndim
_LAYOUT = {WEIGHT_KEY: (np.int64, 0), TOTAL_KEY: (np.int64, 0), **_CHUNKS_LAYOUT}


def is_encrypted(arrays: Mapping[str, object]) -> bool:
    """Whether a model's arrays are an encrypted sum rather than plaintext weights."""
    return WEIGHT_KEY in arrays


def chunks_to_arrays(chunks: Sequence[bytes]) -> dict[str, np.ndarray]:
    """Serialized ciphertexts as two arrays: their byte lengths, and their bytes back to back."""
    return {SIZES_KEY: np.array([len(chunk) for chunk in chunks], dtype=np.int64),
            DATA_KEY: np.frombuffer(b"".join(chunks), dtype=np.uint8)}


def to_arrays(encrypted: EncryptedSum) -> dict[str, np.ndarray]:
    """The named arrays of an encrypted sum (for an ArrayRecord or a checkpoint)."""
    return {WEIGHT_KEY: np.array(encrypted.weight, dtype=np.int64),
            TOTAL_KEY: np.array(encrypted.total, dtype=np.int64), **chunks_to_arrays(encrypted.chunks)}


def _checked_layout(arrays: Mapping[str, np.ndarray], layout: Mapping[str, tuple[type, int]]
                    ) -> dict[str, np.ndarray]:
    missing = [name for name in layout if name not in arrays]
    if missing:
        raise CiphertextError(f"no {missing[0]!r} array")
    unexpected = [name for name in arrays if name not in layout]
    if unexpected:
        raise CiphertextError(f"unexpected array {unexpected[0]!r} (expected only {', '.join(layout)})")
    checked = {name: np.asarray(arrays[name]) for name in layout}
    for name, (dtype, ndim) in layout.items():
        array = checked[name]
        if array.dtype != dtype or array.ndim != ndim:
            form = "a scalar" if ndim == 0 else f"a {ndim}-D"
            raise CiphertextError(f"{name!r} must be {form} {np.dtype(dtype)} array, "
                                  f"got a {array.ndim}-D {array.dtype} one")
    return checked


def chunks_from_arrays(arrays: Mapping[str, np.ndarray]) -> tuple[bytes, ...]:
    """The serialized ciphertexts of chunks_to_arrays' arrays (and nothing else); CiphertextError when
    they are not that. Only the layout is checked here; whether the ciphertexts fit the context and model
    is check_chunks' job."""
    checked = _checked_layout(arrays, _CHUNKS_LAYOUT)
    return _split(checked[SIZES_KEY], checked[DATA_KEY])


def _split(sizes: np.ndarray, data: np.ndarray) -> tuple[bytes, ...]:
    if sizes.size == 0:
        raise CiphertextError(f"no ciphertexts ({SIZES_KEY!r} is empty)")
    if (sizes <= 0).any():
        index = int(np.argmax(sizes <= 0))
        raise CiphertextError(f"ciphertext {index} has size {int(sizes[index])}; sizes must be positive")
    ends = list(accumulate(sizes.tolist()))  # Python ints: a forged size cannot overflow the total
    if ends[-1] != data.size:
        raise CiphertextError(f"the ciphertext sizes add up to {ends[-1]} bytes, but {DATA_KEY!r} holds "
                              f"{data.size}")
    starts = [0, *ends[:-1]]
    return tuple(data[start:end].tobytes() for start, end in zip(starts, ends, strict=True))


def from_arrays(arrays: Mapping[str, np.ndarray]) -> EncryptedSum:
    """The encrypted sum of to_arrays' arrays; CiphertextError when they are not one (layout only)."""
    checked = _checked_layout(arrays, _LAYOUT)
    chunks = _split(checked[SIZES_KEY], checked[DATA_KEY])
    return EncryptedSum(chunks, int(checked[WEIGHT_KEY]), int(checked[TOTAL_KEY]))


def to_array_record(encrypted: EncryptedSum | Sequence[bytes]) -> ArrayRecord:
    """An encrypted sum's record, or a bare sequence of ciphertexts' (a survivor's mask correction)."""
    arrays = to_arrays(encrypted) if isinstance(encrypted, EncryptedSum) else chunks_to_arrays(encrypted)
    return ArrayRecord({name: Array(array) for name, array in arrays.items()})


def reply_fingerprint(content: RecordDict) -> str | None:
    """The key fingerprint a site named in its reply, if any."""
    for config in content.config_records.values():
        value = config.get(FINGERPRINT_KEY)
        if isinstance(value, str):
            return value
    return None
