"""The codes a failing site answers with instead of its exception text.

Kept apart from federation.task (which loads PyTorch and MONAI) so that the ClientApp process, which
only forwards messages to the site worker, can answer with them without importing either.
"""

from __future__ import annotations

from enum import IntEnum


class SiteErrorCode(IntEnum):
    """What a failing site tells the server instead of its exception text (Flower uses codes 0-8)."""

    FAILED = 100  # anything unexpected; the details are in the site's own event file
    SETTINGS = 101  # the SuperNode's node config is incomplete or wrong
    DATA = 102  # the site's dataset is missing, unreadable or has no labelled training cases
    MODEL = 103  # the federation's model does not fit this site (labels, shapes)
    NO_VALIDATION = 104  # asked to evaluate, but the site has no labelled validation cases
    HE_KEY = 105  # the site's HE key differs from the federation's, or only one side encrypts
    UNSAFE_UPDATE = 106  # the site's update failed its own check before encryption
    UNKNOWN_QUERY = 107  # the server asked something this site does not answer
    PRIVACY_BUDGET = 108  # training this round would spend more privacy than the site's epsilon budget
    MASKING = 109  # the server's roster of mask keys was refused (a signature, a short list), or nothing kept

    @property
    def reply(self) -> tuple[int, str]:
        """The (code, reason) a site answers with: the reason is the code's name, nothing of the site's."""
        return int(self), self.name.lower()
