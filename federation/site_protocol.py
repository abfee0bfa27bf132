"""What a site's ClientApp, its site worker and the site's work agree on, in a module that loads no engine.

The ClientApp (federation.client_app) and the worker (federation.site_worker) import this, never PyTorch
or MONAI; the work (federation.site_work) answers with a SiteAnswer.
"""

from __future__ import annotations

from typing import NamedTuple

from flwr.app import RecordDict

APP_PUBLISHER = "fedseg"
APP_NAME = "fedseg-federation"
FLOWER_APP_ID = f"{APP_PUBLISHER}/{APP_NAME}"  # the Flower app (FAB) `fedseg server` submits
CLIENT_APP = "federation.client_app:app"  # the ClientApp a site worker runs


class SiteAnswer(NamedTuple):
    """A handled message: the reply's records, or an error code and the reason the server may read;
    `state` is the site's Context.state afterwards."""

    state: RecordDict
    content: RecordDict | None = None
    error: tuple[int, str] | None = None
