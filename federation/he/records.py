"""Encrypted sums in Flower's records, and the server's judgement and sum of encrypted replies.

An EncryptedSum travels as three named arrays: "he/weight" (the example count, int64 scalar),
"he/sizes" (the byte length of each serialized ciphertext, int64) and "he/data" (the ciphertexts back
to back, uint8). Flower moves and stores every Array as an object of its own, so one Array per
ciphertext (hundreds per model) cost the SuperLink more than the cryptography; three per message do
not. The global model of an encrypted round and a site's encrypted update have the same form, so one
ArrayRecord layout serves both directions. The round's ConfigRecord names the federation's key
("he-fingerprint") and each site's share of the ciphertext capacity ("he-max-magnitude"); a site names
its own key in its reply's site record.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from itertools import accumulate
from typing import Any

import numpy as np
from flwr.app import Array, ArrayRecord, RecordDict

from federation.he.aggregation import CiphertextError, EncryptedSum, add_checked, check_sum
from federation.he.context import HeContext, HeContextError
from federation.validation import (
    ACCEPTED,
    MALFORMED,
    ValidationLimits,
    Verdict,
    decode_arrays,
    validate_metrics_reply,
)

WEIGHT_KEY = "he/weight"
SIZES_KEY = "he/sizes"
DATA_KEY = "he/data"
FINGERPRINT_KEY = "he-fingerprint"
MAX_MAGNITUDE_KEY = "he-max-magnitude"
HE_KEY_MISMATCH = "he-key-mismatch"  # the reason code of a reply encrypted under another key
_LAYOUT = {WEIGHT_KEY: (np.int64, 0), SIZES_KEY: (np.int64, 1), DATA_KEY: (np.uint8, 1)}  # dtype, ndim
_Checked = tuple[list[Any], int]  # a reply's loaded ciphertexts (TenSEAL CKKSVectors) and its weight


def is_encrypted(arrays: Mapping[str, object]) -> bool:
    """Whether a model's arrays are an encrypted sum rather than plaintext weights."""
    return WEIGHT_KEY in arrays


def to_arrays(encrypted: EncryptedSum) -> dict[str, np.ndarray]:
    """The named arrays of an encrypted sum (for an ArrayRecord or a checkpoint)."""
    return {
        WEIGHT_KEY: np.array(encrypted.weight, dtype=np.int64),
        SIZES_KEY: np.array([len(chunk) for chunk in encrypted.chunks], dtype=np.int64),
        DATA_KEY: np.frombuffer(b"".join(encrypted.chunks), dtype=np.uint8),
    }


def from_arrays(arrays: Mapping[str, np.ndarray]) -> EncryptedSum:
    """The encrypted sum of to_arrays' arrays; CiphertextError when they are not one.

    Only the layout is checked here; whether the ciphertexts fit the context and model is check_sum's job.
    """
    missing = [name for name in _LAYOUT if name not in arrays]
    if missing:
        raise CiphertextError(f"no {missing[0]!r} array")
    unexpected = [name for name in arrays if name not in _LAYOUT]
    if unexpected:
        raise CiphertextError(f"unexpected array {unexpected[0]!r} (expected only {', '.join(_LAYOUT)})")
    checked = {name: np.asarray(arrays[name]) for name in _LAYOUT}
    for name, (dtype, ndim) in _LAYOUT.items():
        array = checked[name]
        if array.dtype != dtype or array.ndim != ndim:
            form = "a scalar" if ndim == 0 else f"a {ndim}-D"
            raise CiphertextError(f"{name!r} must be {form} {np.dtype(dtype)} array, "
                                  f"got a {array.ndim}-D {array.dtype} one")
    weight, sizes, data = checked.values()
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
    return EncryptedSum(tuple(data[start:end].tobytes() for start, end in zip(starts, ends, strict=True)),
                        int(weight))


def to_array_record(encrypted: EncryptedSum) -> ArrayRecord:
    return ArrayRecord({name: Array(array) for name, array in to_arrays(encrypted).items()})


def reply_fingerprint(content: RecordDict) -> str | None:
    """The key fingerprint a site named in its reply, if any."""
    for config in content.config_records.values():
        value = config.get(FINGERPRINT_KEY)
        if isinstance(value, str):
            return value
    return None


class EncryptedAggregation:
    """The server's part with HE on: judge encrypted replies and add the accepted ones.

    It holds only a public context (a secret one is refused), so it can check a ciphertext's form and
    add ciphertexts, never read them. `size` is the model's number of values, fixing the chunks.
    Loading ciphertexts is most of the server's work, so judge() keeps the accepted replies' loaded
    ciphertexts for the aggregate() of the same round.
    """

    def __init__(self, context: HeContext, size: int) -> None:
        if context.has_secret_key:
            raise HeContextError("the server's HE context holds a secret key; the server must never have it")
        self.context = context
        self.size = size
        self._checked: dict[int, tuple[RecordDict, _Checked]] = {}

    @property
    def fingerprint(self) -> str:
        return self.context.fingerprint

    def validate_reply(self, content: RecordDict, limits: ValidationLimits, weight_key: str) -> Verdict:
        """Structure, numbers and the key as for plaintext; then the ciphertexts' form (not their values)."""
        return self._check(content, limits, weight_key)[0]

    def judge(
        self, contents: Sequence[RecordDict], limits: ValidationLimits, weight_key: str
    ) -> list[Verdict]:
        """validate_reply for each of a round's replies, remembering the accepted ones for aggregate()."""
        self._checked = {}
        verdicts = []
        for content in contents:
            verdict, checked = self._check(content, limits, weight_key)
            if checked is not None:
                self._checked[id(content)] = (content, checked)
            verdicts.append(verdict)
        return verdicts

    def aggregate(self, contents: Sequence[RecordDict]) -> ArrayRecord:
        """Enc(sum n_k w_k) and sum n_k of accepted replies: ciphertext additions only."""
        loaded, weights = zip(*(self._loaded(content) for content in contents), strict=True)
        self._checked = {}
        return to_array_record(add_checked(loaded, weights))

    def _loaded(self, content: RecordDict) -> _Checked:
        """The reply's loaded ciphertexts and weight: judge()'s if it kept them, else loaded now."""
        kept = self._checked.get(id(content))
        if kept is not None and kept[0] is content:
            return kept[1]
        record = next(iter(content.array_records.values()))
        encrypted = from_arrays({name: array.numpy() for name, array in record.items()})
        return check_sum(self.context, encrypted, self.size), encrypted.weight

    def _check(
        self, content: RecordDict, limits: ValidationLimits, weight_key: str
    ) -> tuple[Verdict, _Checked | None]:
        if len(content.array_records) != 1:
            return Verdict(MALFORMED, f"expected one ArrayRecord, got {len(content.array_records)}"), None
        verdict = validate_metrics_reply(content, limits, weight_key)
        if not verdict.accepted:
            return verdict, None
        site_key = reply_fingerprint(content)
        if site_key != self.fingerprint:
            return Verdict(HE_KEY_MISMATCH, f"the site's HE key {site_key or 'none'} is not the federation's "
                                            f"{self.fingerprint}"), None
        arrays = decode_arrays(next(iter(content.array_records.values())))
        if isinstance(arrays, Verdict):
            return arrays, None
        try:
            encrypted = from_arrays(arrays)
            chunks = check_sum(self.context, encrypted, self.size)
        except CiphertextError as error:
            return Verdict(MALFORMED, f"encrypted update: {error}"), None
        examples = next(iter(content.metric_records.values()))[weight_key]
        if encrypted.weight != examples:
            return Verdict(MALFORMED, f"the encrypted update is weighted by {encrypted.weight}, "
                                      f"not by its {weight_key} {examples}"), None
        return Verdict(ACCEPTED), (chunks, encrypted.weight)
