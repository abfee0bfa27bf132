"""A site's masking settings (site.toml [he] peer_keys and min_mask_sites, with its [auth] node key).

Plain settings without the cryptography, so that the workbench's forms and settings read them without
loading it; the keys are read when masking needs them (federation.he.roster, federation.he.site).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from segmentation.errors import ConfigError

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric import ec

MIN_MASK_SITES = 3


@dataclass(frozen=True)
class MaskingSettings:
    """A site's masking settings: its node key (signs its mask key), the federation's node public keys
    to pin peers to (a folder of .pub files; none: trust the keys the server relays), and the fewest
    sites it masks with (2 only for a two-site federation, where each site can compute the other's
    update from the average anyway)."""

    node_private_key: Path | None = None
    peer_keys: Path | None = None
    min_sites: int = MIN_MASK_SITES

    def __post_init__(self) -> None:
        if isinstance(self.min_sites, bool) or not isinstance(self.min_sites, int) or self.min_sites < 2:
            raise ConfigError(f"min_mask_sites must be an integer of at least 2, got {self.min_sites!r}")

    def to_json(self) -> str:
        return json.dumps({key: str(value) if isinstance(value, Path) else value
                           for key, value in asdict(self).items()})

    @classmethod
    def from_json(cls, text: str) -> MaskingSettings:
        values = json.loads(text)
        return cls(*(Path(values[key]) if values[key] is not None else None
                     for key in ("node_private_key", "peer_keys")), min_sites=values["min_sites"])

    def pinned(self) -> frozenset[str] | None:
        """The fingerprints of the .pub files in peer_keys (None when not pinning); ConfigError when the
        folder is missing, not a folder, unreadable, empty of .pub files or holds a key that is not one."""
        if self.peer_keys is None:
            return None
        if not self.peer_keys.exists():
            raise ConfigError(f"the peer key folder {self.peer_keys} does not exist")
        if not self.peer_keys.is_dir():
            raise ConfigError(f"the peer key folder {self.peer_keys} is not a folder")
        from federation.keys import fingerprint, load_public_key

        try:
            paths = sorted(self.peer_keys.glob("*.pub"))
        except OSError as error:
            raise ConfigError(f"cannot read the peer key folder {self.peer_keys}: {error.strerror}") from None
        if not paths:
            raise ConfigError(f"the peer key folder {self.peer_keys} holds no .pub files")
        return frozenset(fingerprint(load_public_key(path)) for path in paths)

    def node_key(self) -> ec.EllipticCurvePrivateKey | None:
        """The node key that signs this site's mask keys; ConfigError when the file is not one."""
        from federation.keys import load_private_key

        return None if self.node_private_key is None else load_private_key(self.node_private_key)
