"""Join a federation from the GUI: write site.toml from the form, check it with the federation's own
loader, test that the server answers, and run `fedseg site` as a child process."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import tomli_w

from app.models.federation import Channel
from app.services.child_process import FedsegChild
from federation.he.masking_settings import MIN_MASK_SITES, MaskingSettings
from segmentation.atomic import write_text_atomic
from segmentation.errors import ConfigError
from segmentation.settings import PrivacySettings

SITE_TOML = "site.toml"
LOG_NAME = "site.log"


@dataclass(frozen=True)
class SiteForm:
    """The federation page's fields; empty paths mean "not used". Without a CA certificate the site joins
    only when `unencrypted` was chosen explicitly (testing only). The privacy numbers are kept as typed
    even while `dp` is off, so that turning it on again finds them. The masking settings (a folder of the
    federation's node public keys to pin peers to, the fewest sites to mask with) are written and checked
    only with an HE secret context, and kept as typed while there is none."""

    name: str
    modality: str
    data_dir: str
    server_address: str
    ca_certificate: str = ""
    unencrypted: bool = False
    node_key: str = ""
    he_context: str = ""
    peer_keys: str = ""
    min_mask_sites: int = MIN_MASK_SITES
    clientappio_port: int = 9094
    join_timeout: float = 60.0
    dp: bool = PrivacySettings.dp
    noise_multiplier: float = PrivacySettings.noise_multiplier
    max_grad_norm: float = PrivacySettings.max_grad_norm
    delta: float = PrivacySettings.delta
    epsilon_budget: float = PrivacySettings.epsilon_budget

    def check(self) -> None:
        """A ConfigError for a form that cannot join: a missing field, no TLS and no explicit choice,
        privacy numbers PrivacySettings refuses, or (with HE) masking settings that cannot be used."""
        if not self.name or not self.data_dir or not self.server_address:
            raise ConfigError("fill in the site name, the dataset folder and the server address")
        if not self.ca_certificate and not self.unencrypted:
            raise ConfigError("give the federation's CA certificate, or choose \"unencrypted connection "
                              "(testing only)\" to send updates without TLS")
        self.privacy()
        if self.he_context:
            self.masking()

    def masking(self) -> MaskingSettings:
        """The site.toml's masking settings ([he] peer_keys and min_mask_sites, with the node key); a
        one-sentence ConfigError when min_mask_sites is below 2 or the peer key folder is missing or holds
        no .pub file that loads."""
        peer_keys = Path(self.peer_keys).expanduser() if self.peer_keys else None
        settings = MaskingSettings(Path(self.node_key) if self.node_key else None, peer_keys,
                                   self.min_mask_sites)
        settings.pinned()
        return settings

    def privacy(self) -> PrivacySettings:
        """The site.toml's [privacy]; PrivacySettings' one-sentence ConfigError for numbers it refuses."""
        return PrivacySettings(self.dp, self.noise_multiplier, self.max_grad_norm, self.delta,
                               self.epsilon_budget)

    def privacy_problem(self) -> str:
        """Why the privacy numbers cannot be used, in PrivacySettings' sentence; empty when they can."""
        try:
            self.privacy()
        except ConfigError as error:
            return str(error)
        return ""

    def channel(self) -> Channel:
        """What protects this site's link, its updates and its training data with these settings."""
        return Channel(tls=bool(self.ca_certificate), node_auth=bool(self.node_key), he=bool(self.he_context),
                       dp=self.dp)

    def to_toml(self, event_file: Path) -> str:
        self.check()
        document = {
            "site": {"name": self.name, "modality": self.modality, "data_dir": self.data_dir,
                     "event_file": str(event_file)},
            "server": {"address": self.server_address, "clientappio_port": self.clientappio_port,
                       "join_timeout": self.join_timeout},
            "tls": {"enabled": bool(self.ca_certificate),
                    **({"ca_certificate": self.ca_certificate} if self.ca_certificate else {})},
            "auth": {"node_private_key": self.node_key} if self.node_key else {},
            "he": self._he_table(),
            "privacy": asdict(self.privacy()),
        }
        return tomli_w.dumps(document)

    def _he_table(self) -> dict[str, object]:
        """[he]: the secret context and the masking settings, all only when HE is used."""
        if not self.he_context:
            return {}
        return {"enabled": True, "secret_context": self.he_context,
                **({"peer_keys": self.peer_keys} if self.peer_keys else {}),
                "min_mask_sites": self.min_mask_sites}


def site_folder(parent: Path, name: str) -> Path:
    """The folder a site named `name` keeps its site.toml, events and models in under `parent`."""
    return parent / (name.replace(" ", "-") or "site")


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
    from federation.joining import port_problem

    try:
        problem = port_problem(address, timeout)
    except ValueError as error:
        raise ConfigError(str(error)) from None
    if problem is not None:
        raise ConfigError(f"{address} does not answer ({problem}); is the server running?")
    return f"{address} answers"


class SiteJob(FedsegChild):
    """`fedseg site --config site.toml`, its log and its event file."""

    def __init__(self, config) -> None:
        super().__init__(["site", "--config", str(config.source)], config.source.parent / LOG_NAME,
                         config.event_file)
        self.config = config
