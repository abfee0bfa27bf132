"""What a site's ClientApp and its site worker say to each other, in a module that loads no engine.

The ClientApp process (federation.client_app) imports this and federation.site_worker only, never
PyTorch or MONAI; the worker's handler (federation.site_work.answer) is handed to it by whoever starts
it, so the work and the way it travels do not import each other.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

from flwr.app import RecordDict

NODE_WORKER_ADDRESS = "site-worker"  # node config: host:port of the site's worker
NODE_WORKER_KEY = "site-worker-key"  # node config: the connection key, hex
KEY_ENVIRONMENT = "FEDSEG_SITE_WORKER_KEY"  # how the worker gets the key (never on its command line)


class SiteAnswer(NamedTuple):
    """A handled message: the reply's records, or an error code and the reason the server may read;
    `state` is the site's Context.state afterwards."""

    state: RecordDict
    content: RecordDict | None = None
    error: tuple[int, str] | None = None


# (kind, content, node_config, state) -> the answer: train, evaluate or the fingerprint query.
Handler = Callable[[str, RecordDict, Mapping[str, Any], RecordDict], SiteAnswer]
