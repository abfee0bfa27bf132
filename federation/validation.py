"""Checks on one site's reply before it may join the aggregate; pure functions, no Flower process.

A reply is judged against the round's global arrays: same keys, shapes and dtypes, finite values, a
sane num-examples, finite metrics, and (with three or more replies) an update norm that is not far
above the others'. Bad site data never raises here; it yields a Verdict with a reason code.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from flwr.app import ArrayRecord, MetricRecord, RecordDict

ACCEPTED = "accepted"
MALFORMED = "malformed"
MISSING_KEYS = "missing-keys"
UNEXPECTED_KEYS = "unexpected-keys"
SHAPE_MISMATCH = "shape-mismatch"
DTYPE_MISMATCH = "dtype-mismatch"
NON_FINITE = "non-finite"
BAD_NUM_EXAMPLES = "bad-num-examples"
NORM_OUTLIER = "norm-outlier"
SITE_ERROR = "site-error"
OTHER_LABELS = "other-labels"  # a fingerprint of other labels than the federation's (federation.planning)
UNKNOWN_KEY = "unknown-key"  # a metric or config name the federation does not know (federation.reply_keys)

# The norm check compares a reply with the others: below this many replies there is no "others".
MIN_REPLIES_FOR_NORM_CHECK = 3

# A site's display name: what other sites see. Never a path, so no slashes and a short length.
_SITE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9 ._-]{0,63}")


@dataclass(frozen=True)
class ValidationLimits:
    """How strict the server is with replies.

    norm_outlier_k: a reply is an outlier when its update norm exceeds median + k * spread, where
    spread is the median absolute deviation, but never less than norm_min_spread * median (with few
    sites the MAD alone can be near zero and would flag honest but different sites).
    """

    max_num_examples: float = 1_000_000
    norm_outlier_k: float = 5.0
    norm_min_spread: float = 0.5

    def __post_init__(self) -> None:
        if not self.max_num_examples > 0:
            raise ValueError(f"max_num_examples must be positive, got {self.max_num_examples}")
        if not self.norm_outlier_k > 0:
            raise ValueError(f"norm_outlier_k must be positive, got {self.norm_outlier_k}")
        if not self.norm_min_spread >= 0:
            raise ValueError(f"norm_min_spread must be zero or more, got {self.norm_min_spread}")


@dataclass(frozen=True)
class Verdict:
    """The judgement on one reply: `code` is ACCEPTED or a reason code; `detail` says why in words."""

    code: str
    detail: str = ""
    update_norm: float | None = None

    @property
    def accepted(self) -> bool:
        return self.code == ACCEPTED


def is_site_name(name: object) -> bool:
    """True for a usable display name: 1-64 letters, digits, spaces, '.', '_' or '-', no path."""
    return isinstance(name, str) and _SITE_NAME.fullmatch(name) is not None


def check_structure(content: RecordDict, weight_key: str) -> Verdict | None:
    """Exactly one MetricRecord holding a scalar `weight_key`; None when that holds."""
    if len(content.metric_records) != 1:
        return Verdict(MALFORMED, f"expected one MetricRecord, got {len(content.metric_records)}")
    metrics = next(iter(content.metric_records.values()))
    if weight_key not in metrics:
        return Verdict(MALFORMED, f"the MetricRecord has no {weight_key!r}")
    if isinstance(metrics[weight_key], list):
        return Verdict(MALFORMED, f"{weight_key!r} is a list, not a number")
    return None


def check_num_examples(value: float, limits: ValidationLimits) -> Verdict | None:
    """A positive, finite count no larger than the configured maximum; None when that holds."""
    if isinstance(value, bool) or not math.isfinite(value) or value <= 0 or value > limits.max_num_examples:
        return Verdict(
            BAD_NUM_EXAMPLES, f"num-examples {value!r} is outside (0, {limits.max_num_examples:g}]"
        )
    return None


def check_metrics_finite(metrics: MetricRecord) -> Verdict | None:
    """Every metric value (scalar or list) is finite; None when that holds."""
    for key, value in metrics.items():
        values = value if isinstance(value, list) else [value]
        if not all(math.isfinite(v) for v in values):
            return Verdict(NON_FINITE, f"metric {key!r} is not finite")
    return None


def decode_arrays(record: ArrayRecord) -> dict[str, np.ndarray] | Verdict:
    """The record's arrays as NumPy, or a MALFORMED verdict when a payload cannot be decoded."""
    arrays = {}
    for key, array in record.items():
        try:
            arrays[key] = array.numpy()
        except Exception as error:  # noqa: BLE001 - any decoding failure is the site's bad data
            return Verdict(MALFORMED, f"array {key!r} cannot be decoded ({type(error).__name__})")
    return arrays


def check_arrays(arrays: Mapping[str, np.ndarray], reference: Mapping[str, np.ndarray]) -> Verdict | None:
    """Same keys, shapes and dtypes as the global arrays, and only finite values; None when so."""
    missing = [key for key in reference if key not in arrays]
    if missing:
        return Verdict(MISSING_KEYS, f"{len(missing)} array(s) missing, first {missing[0]!r}")
    unexpected = [key for key in arrays if key not in reference]
    if unexpected:
        return Verdict(UNEXPECTED_KEYS, f"{len(unexpected)} unexpected array(s), first {unexpected[0]!r}")
    for key, expected in reference.items():
        array = arrays[key]
        if array.shape != expected.shape:
            return Verdict(SHAPE_MISMATCH, f"array {key!r} has shape {array.shape}, not {expected.shape}")
        if array.dtype != expected.dtype:
            return Verdict(DTYPE_MISMATCH, f"array {key!r} has dtype {array.dtype}, not {expected.dtype}")
        if array.dtype.kind in "fc" and not np.isfinite(array).all():
            return Verdict(NON_FINITE, f"array {key!r} holds NaN or Inf")
    return None


def update_norm(arrays: Mapping[str, np.ndarray], reference: Mapping[str, np.ndarray]) -> float:
    """Euclidean norm of the whole update, ||w_site - w_global||, over every array."""
    squared = sum(
        float(np.sum(np.square(arrays[key].astype(np.float64) - value.astype(np.float64))))
        for key, value in reference.items()
    )
    return math.sqrt(squared)


def norm_threshold(norms: Sequence[float], limits: ValidationLimits) -> float | None:
    """The update norm above which a reply is an outlier, or None with too few replies to judge."""
    if len(norms) < MIN_REPLIES_FOR_NORM_CHECK:
        return None
    median = float(np.median(norms))
    mad = float(np.median(np.abs(np.asarray(norms) - median)))
    return median + limits.norm_outlier_k * max(mad, limits.norm_min_spread * median)


def validate_reply(
    content: RecordDict, reference: Mapping[str, np.ndarray], limits: ValidationLimits, weight_key: str
) -> Verdict:
    """Every check that needs only this reply; an accepted verdict carries the update norm."""
    if len(content.array_records) != 1:
        return Verdict(MALFORMED, f"expected one ArrayRecord, got {len(content.array_records)}")
    verdict = validate_metrics_reply(content, limits, weight_key)
    if not verdict.accepted:
        return verdict
    arrays = decode_arrays(next(iter(content.array_records.values())))
    if isinstance(arrays, Verdict):
        return arrays
    return check_arrays(arrays, reference) or Verdict(ACCEPTED, update_norm=update_norm(arrays, reference))


def validate_metrics_reply(content: RecordDict, limits: ValidationLimits, weight_key: str) -> Verdict:
    """The checks for a reply that carries metrics only (federated evaluation)."""
    verdict = check_structure(content, weight_key)
    if verdict is None:
        metrics = next(iter(content.metric_records.values()))
        verdict = check_num_examples(metrics[weight_key], limits) or check_metrics_finite(metrics)
    return verdict or Verdict(ACCEPTED)


def validate_replies(
    contents: Sequence[RecordDict],
    reference: Mapping[str, np.ndarray],
    limits: ValidationLimits,
    weight_key: str = "num-examples",
) -> list[Verdict]:
    """One verdict per training reply, in order: per-reply checks, then the norm-outlier check."""
    verdicts = [validate_reply(content, reference, limits, weight_key) for content in contents]
    norms = [v.update_norm for v in verdicts if v.accepted and v.update_norm is not None]
    threshold = norm_threshold(norms, limits)
    if threshold is None:
        return verdicts
    median = float(np.median(norms))
    return [
        Verdict(
            NORM_OUTLIER,
            f"update norm {v.update_norm:.4g} is above {threshold:.4g} (median {median:.4g})",
            v.update_norm,
        )
        if v.accepted and v.update_norm > threshold
        else v
        for v in verdicts
    ]
