"""A site's part of encrypted aggregation, without Flower: its key, the global model, its update.

Before anything is decrypted or sent, the site's key must be the federation's (same fingerprint) and
both sides must agree on encrypting: a site with HE on never sends a plaintext update, whatever the
server asks. Failures are SiteRoundErrors; key mismatches are shareable, since they name only the two
fingerprints, so the server's operator sees them too.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np

from federation.he.aggregation import (
    CiphertextError,
    EncryptedSum,
    UnsafeUpdate,
    check_update,
    decrypt_average,
    encrypt_weighted,
)
from federation.he.context import HeContext, HeContextError, load_secret_context
from federation.he.packing import Layout
from federation.he.records import from_arrays
from federation.task import SiteErrorCode, SiteRoundError


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


def encrypt_update(
    context: HeContext, weights: Mapping[str, np.ndarray], global_model: Mapping[str, np.ndarray],
    num_examples: int, max_magnitude: float,
) -> EncryptedSum:
    """Check the site's new weights against the global model it started from, then Enc(n * weights)."""
    layout = Layout.of(global_model)
    vector = layout.flatten(weights)
    try:
        check_update(vector, layout.flatten(global_model), num_examples, max_magnitude)
    except UnsafeUpdate as error:
        raise SiteRoundError(SiteErrorCode.UNSAFE_UPDATE, f"not sent: {error}") from None
    return encrypt_weighted(context, vector, num_examples)
