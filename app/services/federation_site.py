"""Join a federation from the GUI: write site.toml from the form, check it with the federation's own
loader, test that the server answers, and run `fedseg site` as a child process."""

from __future__ import annotations

import socket
from dataclasses import dataclass
from pathlib import Path

import tomli_w

from app.services.child_process import FedsegChild
from segmentation.atomic import write_text_atomic
from segmentation.errors import ConfigError

SITE_TOML = "site.toml"
LOG_NAME = "site.log"
CONNECTED_LINE = "connected; waiting"  # what `fedseg site` prints once the server accepted the node


@dataclass(frozen=True)
class SiteForm:
    """The federation page's fields; empty paths mean "not used" (no CA file: TLS off)."""

    name: str
    modality: str
    data_dir: str
    server_address: str
    ca_certificate: str = ""
    node_key: str = ""
    he_context: str = ""
    clientappio_port: int = 9094

    def to_toml(self, event_file: Path) -> str:
        document = {
            "site": {"name": self.name, "modality": self.modality, "data_dir": self.data_dir,
                     "event_file": str(event_file)},
            "server": {"address": self.server_address, "clientappio_port": self.clientappio_port},
            "tls": {"enabled": bool(self.ca_certificate),
                    **({"ca_certificate": self.ca_certificate} if self.ca_certificate else {})},
            "auth": {"node_private_key": self.node_key} if self.node_key else {},
            "he": {"enabled": True, "secret_context": self.he_context} if self.he_context else {},
        }
        return tomli_w.dumps(document)


def write_site_config(form: SiteForm, folder: Path):
    """Write folder/site.toml and read it back with federation.config (every problem is a ConfigError)."""
    from federation.config import load_site_config

    path = write_text_atomic(folder / SITE_TOML, form.to_toml(folder / "events.jsonl"))
    return load_site_config(path)


def he_fingerprint(path: Path) -> str:
    """The short fingerprint of a secret HE context file (what `fedseg keys he` printed)."""
    from federation.he.context import load_secret_context

    return load_secret_context(path).fingerprint


def check_reachable(address: str, timeout: float = 5.0) -> str:
    """A sentence saying the server's port answers; a ConfigError saying why not."""
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise ConfigError(f"the server address must be HOST:PORT, got {address!r}")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout):
            pass
    except OSError as error:
        reason = error.strerror or type(error).__name__
        raise ConfigError(f"{address} does not answer ({reason.lower()}); is the server running?") from None
    return f"{address} answers"


class SiteJob(FedsegChild):
    """`fedseg site --config site.toml`, its log and its event file."""

    def __init__(self, config) -> None:
        super().__init__(["site", "--config", str(config.source)], config.source.parent / LOG_NAME,
                         config.event_file)
        self.config = config

    @property
    def connected(self) -> bool:
        return CONNECTED_LINE in self.log_tail(400)
