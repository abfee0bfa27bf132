"""server.toml and site.toml: typed, validated settings of the federation server and of one site.

Every value is checked when the file is read; a wrong or missing one raises ConfigError naming the
file, the table, the key and the reason. Unknown tables and keys are errors too, so a typo never
passes silently. Relative paths are relative to the folder of the TOML file. Reference with examples:
docs/configuration.md; templates: assets/config/.
"""

from __future__ import annotations

import difflib
import math
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from federation.he.context import HeContext, load_public_context, load_secret_context
from federation.he.masking_settings import MIN_MASK_SITES, MaskingSettings
from federation.keys import load_private_key, load_public_key
from federation.validation import ValidationLimits, is_site_name
from segmentation.errors import ConfigError
from segmentation.settings import PrivacySettings

STRATEGIES = ("fedavg", "fedprox")
SITE_MODALITIES = ("ct", "mr", "mr-t1", "mr-t2")
_REQUIRED = object()


class _Table:
    """One TOML table being read: typed getters that raise ConfigError, and no key left unread."""

    def __init__(self, source: Path, name: str, values: dict[str, Any]) -> None:
        self.source = source
        self.name = name
        self.values = dict(values)
        self.asked: list[str] = []

    def error(self, key: str, reason: str) -> ConfigError:
        return ConfigError(f"{self.source}: [{self.name}] {key} {reason}")

    def _take(self, key: str, default: Any) -> Any:
        self.asked.append(key)
        if key in self.values:
            return self.values.pop(key)
        if default is _REQUIRED:
            raise self.error(key, "is required but missing")
        return default

    def integer(self, key: str, default: Any = _REQUIRED, maximum: int | None = None,
                minimum: int = 1) -> int:
        """An integer of at least `minimum` (positive by default), at most `maximum` when given."""
        value = self._take(key, default)
        ok = isinstance(value, int) and not isinstance(value, bool) and value >= minimum
        if not ok or (maximum is not None and value > maximum):
            wanted = ("a positive integer" if minimum == 1 else f"an integer of at least {minimum}")
            if maximum is not None:
                wanted = f"an integer from {minimum} to {maximum}"
            raise self.error(key, f"must be {wanted}, got {value!r}")
        return value

    def number(self, key: str, default: Any = _REQUIRED, minimum: float = 0.0, *, above: bool = False,
               maximum: float = math.inf) -> float:
        """A finite number >= minimum (> minimum when `above`) and <= maximum; integers allowed."""
        value = self._take(key, default)
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        if not ok or value < minimum or (above and value == minimum) or value > maximum:
            bound = f"above {minimum:g}" if above else f"at least {minimum:g}"
            limit = "" if maximum == math.inf else f" and at most {maximum:g}"
            raise self.error(key, f"must be a number {bound}{limit}, got {value!r}")
        return float(value)

    def boolean(self, key: str, default: Any = _REQUIRED) -> bool:
        value = self._take(key, default)
        if not isinstance(value, bool):
            raise self.error(key, f"must be true or false, got {value!r}")
        return value

    def string(self, key: str, default: Any = _REQUIRED, choices: tuple[str, ...] | None = None) -> str:
        value = self._take(key, default)
        if not isinstance(value, str) or not value.strip():
            raise self.error(key, f"must be a non-empty string, got {value!r}")
        if choices is not None and value not in choices:
            raise self.error(key, f"must be one of {', '.join(choices)}, got {value!r}")
        return value

    def strings(self, key: str, default: Any = _REQUIRED, minimum: int = 1) -> tuple[str, ...]:
        """A list of at least `minimum` distinct non-empty strings."""
        value = self._take(key, default)
        ok = isinstance(value, list) and all(isinstance(item, str) and item.strip() for item in value)
        if not ok or len(value) < minimum or len(set(value)) < len(value):
            raise self.error(key, f"must be a list of at least {minimum} different names, got {value!r}")
        return tuple(value)

    def integers(self, key: str, default: Any = _REQUIRED, minimum: int = 1) -> tuple[int, ...]:
        """A list of at least `minimum` positive integers."""
        value = self._take(key, default)
        ok = isinstance(value, list) and all(
            isinstance(item, int) and not isinstance(item, bool) and item >= 1 for item in value
        )
        if not ok or len(value) < minimum:
            raise self.error(key, f"must be a list of at least {minimum} positive integers, got {value!r}")
        return tuple(value)

    def optional_numbers(
        self, key: str, count: int, integers: bool = False
    ) -> tuple[int | float, ...] | None:
        """An optional list of exactly `count` positive finite numbers (integers when `integers`)."""
        value = self._take(key, None)
        if value is None:
            return None
        kinds = int if integers else (int, float)
        ok = isinstance(value, list) and len(value) == count and all(
            isinstance(item, kinds) and not isinstance(item, bool) and math.isfinite(item) and item > 0
            for item in value
        )
        if not ok:
            wanted = "positive integers" if integers else "positive numbers"
            raise self.error(key, f"must be a list of {count} {wanted}, got {value!r}")
        return tuple(value) if integers else tuple(float(item) for item in value)

    def path(self, key: str, default: Any = _REQUIRED, must_exist: bool = True) -> Path | None:
        """A path relative to the TOML file's folder; None when optional and absent."""
        value = self._take(key, default)
        if value is None:
            return None
        return self._resolve(key, value, must_exist)

    def paths(self, key: str) -> tuple[Path, ...]:
        """An optional list of existing files."""
        value = self._take(key, [])
        if not isinstance(value, list):
            raise self.error(key, f"must be a list of paths, got {value!r}")
        return tuple(self._resolve(f"{key}[{index}]", item, True) for index, item in enumerate(value))

    def _resolve(self, key: str, value: Any, must_exist: bool) -> Path:
        if not isinstance(value, str) or not value.strip():
            raise self.error(key, f"must be a path, got {value!r}")
        path = (self.source.parent / Path(value).expanduser()).resolve()
        if must_exist and not path.exists():
            raise self.error(key, f"names {value!r}, which does not exist")
        return path

    def finish(self) -> None:
        """Reject whatever was not read: a misspelt key must not be silently ignored."""
        if self.values:
            key = next(iter(self.values))
            raise self.error(key, "is not a known setting" + _suggestion(key, self.asked))


def _suggestion(word: str, known: list[str] | tuple[str, ...]) -> str:
    close = difflib.get_close_matches(word, known, n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


class _Document:
    """A parsed TOML file whose top-level tables are handed out one by one, each read completely."""

    def __init__(self, path: str | Path, tables: tuple[str, ...]) -> None:
        self.source = Path(path)
        try:
            with open(self.source, "rb") as stream:
                data = tomllib.load(stream)
        except FileNotFoundError:
            raise ConfigError(f"{self.source}: the configuration file does not exist") from None
        except OSError as error:
            raise ConfigError(f"{self.source}: cannot be read ({error.strerror})") from None
        except tomllib.TOMLDecodeError as error:
            raise ConfigError(f"{self.source}: not valid TOML: {error}") from None
        for name, value in data.items():
            if not isinstance(value, dict):
                known = ", ".join(f"[{table}]" for table in tables)
                raise ConfigError(f"{self.source}: {name} is outside any table; settings belong in {known}")
            if name not in tables:
                raise ConfigError(f"{self.source}: unknown table [{name}]" + _suggestion(name, tables))
        self.data = data

    def table(self, name: str) -> _Table:
        return _Table(self.source, name, self.data.get(name, {}))


@dataclass(frozen=True)
class FederationSettings:
    """How the run goes: rounds, who takes part, the algorithm and what sites do locally."""

    rounds: int
    min_sites: int
    fraction: float = 1.0
    strategy: str = "fedavg"
    proximal_mu: float = 0.0
    round_timeout: float = 120.0
    local_epochs: int = 1
    personalise_epochs: int = 0  # after the last round each site fine-tunes the global model (0: never)
    augmentation: str = "gin"
    augmentation_probability: float = 0.3
    share_site_metrics: bool = True
    min_valid_replies: int = 1


@dataclass(frozen=True)
class ModelSettings:
    """The network every site trains; the server decides it and sends it to the sites each round.

    labels are the label names by value (0 is the background); every site's dataset must have exactly
    these. channels are the 2D U-Net's widths per level. How studies become network input (the plan) is
    made before round 1 from the sites' fingerprints; target_spacing (mm, x y z) and patch_size (pixels,
    y x) are an expert's overrides of the automatic values, None to leave them to the plan's rules.
    """

    labels: tuple[str, ...]
    channels: tuple[int, ...] = (32, 64, 128, 256)
    batch_size: int = 16
    learning_rate: float = 1e-3
    target_spacing: tuple[float, float, float] | None = None
    patch_size: tuple[int, ...] | None = None

    @property
    def label_map(self) -> dict[int, str]:
        """The labels by value, as datasets and plans name them."""
        return dict(enumerate(self.labels))


@dataclass(frozen=True)
class ServerTls:
    """TLS of the SuperLink: off, auto-generated into the run folder (paths None), or given files."""

    enabled: bool = True
    ca_certificate: Path | None = None
    certificate: Path | None = None
    private_key: Path | None = None

    @property
    def generate(self) -> bool:
        return self.enabled and self.certificate is None


@dataclass(frozen=True)
class HomomorphicEncryption:
    """Masked, encrypted (BFV) aggregation: the server holds only the public context (fingerprint: its
    key's, when on)."""

    enabled: bool = False
    context: Path | None = None
    fingerprint: str | None = None


@dataclass(frozen=True)
class ServerConfig:
    """Everything `fedseg server` needs, read from server.toml."""

    source: Path
    host: str
    fleet_port: int
    run_dir: Path
    federation: FederationSettings
    validation: ValidationLimits
    tls: ServerTls
    site_public_keys: tuple[Path, ...]
    he: HomomorphicEncryption
    model: ModelSettings


@dataclass(frozen=True)
class SiteConfig:
    """Everything `fedseg site` needs, read from site.toml."""

    source: Path
    name: str
    modality: str
    data_dir: Path
    event_file: Path
    server_address: str
    clientappio_port: int
    tls_enabled: bool
    ca_certificate: Path | None
    node_private_key: Path | None
    he_secret_context: Path | None  # set exactly when the site encrypts ([he] enabled)
    he_fingerprint: str | None = None
    join_timeout: float = 60.0  # seconds until a site the server has not accepted gives up (0: never)
    privacy: PrivacySettings = PrivacySettings()  # [privacy]: DP-SGD at this site when dp is on
    masking: MaskingSettings = MaskingSettings()  # [he] peer_keys, min_mask_sites and the node key


MAX_PORT = 65535
NETWORK_DIMS = 2  # the federation trains FedGIN's 2D U-Net on slices
_SERVER_TABLES = ("server", "federation", "model", "validation", "tls", "auth", "he")
_SITE_TABLES = ("site", "server", "tls", "auth", "he", "privacy")
_TLS_FILES = ("ca_certificate", "certificate", "private_key")


def load_server_config(path: str | Path) -> ServerConfig:
    """Read and check server.toml."""
    document = _Document(path, _SERVER_TABLES)
    server = document.table("server")
    host = server.string("host", "0.0.0.0")
    fleet_port = server.integer("fleet_port", 9092, maximum=MAX_PORT)
    run_dir = server.path("run_dir", "runs/server", must_exist=False)
    server.finish()
    return ServerConfig(
        source=document.source, host=host, fleet_port=fleet_port, run_dir=run_dir,
        federation=_federation(document), validation=_validation(document), tls=_server_tls(document),
        site_public_keys=_site_public_keys(document), he=_server_he(document), model=_model(document),
    )


def _federation(document: _Document) -> FederationSettings:
    table = document.table("federation")
    strategy = table.string("strategy", "fedavg", STRATEGIES)
    settings = FederationSettings(
        rounds=table.integer("rounds"),
        min_sites=table.integer("min_sites"),
        fraction=table.number("fraction", 1.0, above=True, maximum=1.0),
        strategy=strategy,
        proximal_mu=table.number("proximal_mu", 0.0),
        round_timeout=table.number("round_timeout", 120.0, above=True),
        local_epochs=table.integer("local_epochs", 1),
        personalise_epochs=table.integer("personalise_epochs", 0, minimum=0),
        augmentation=table.string("augmentation", "gin", _augmentations()),
        augmentation_probability=table.number("augmentation_probability", 0.3, maximum=1.0),
        share_site_metrics=table.boolean("share_site_metrics", True),
        min_valid_replies=table.integer("min_valid_replies", 1),
    )
    if strategy == "fedprox" and settings.proximal_mu == 0:
        raise table.error("proximal_mu", 'must be above 0 with strategy = "fedprox" (0 is plain FedAvg)')
    if strategy == "fedavg" and settings.proximal_mu != 0:
        raise table.error("proximal_mu", 'is only used with strategy = "fedprox"; remove it or switch')
    table.finish()
    return settings


def _model(document: _Document) -> ModelSettings:
    table = document.table("model")
    if "image_size" in table.values:
        raise table.error("image_size", "is no longer a setting: the plan (target spacing, patch size) now "
                                        "comes from the sites' fingerprints before round 1; remove it (an "
                                        "expert may set target_spacing = [x, y, z] and patch_size = [y, x])")
    channels = table.integers("channels", [32, 64, 128, 256], minimum=2)
    patch_size = table.optional_numbers("patch_size", NETWORK_DIMS, integers=True)
    multiple = 2 ** (len(channels) - 1)
    if patch_size is not None and any(side % multiple for side in patch_size):
        raise table.error("patch_size", f"must be multiples of {multiple} for {len(channels)} levels of "
                                        f"channels, got {list(patch_size)}")
    settings = ModelSettings(
        labels=table.strings("labels", minimum=2), channels=channels,
        batch_size=table.integer("batch_size", 16),
        learning_rate=table.number("learning_rate", 1e-3, above=True),
        target_spacing=table.optional_numbers("target_spacing", 3),
        patch_size=patch_size,
    )
    table.finish()
    return settings


def _augmentations() -> tuple[str, ...]:
    """The augmentation names the engine knows (imported here so `fedseg --help` stays light)."""
    from segmentation.transforms import AUGMENTATIONS

    return AUGMENTATIONS


def _validation(document: _Document) -> ValidationLimits:
    table = document.table("validation")
    limits = ValidationLimits(
        max_num_examples=table.number("max_num_examples", 1_000_000, above=True),
        norm_outlier_k=table.number("norm_outlier_k", 5.0, above=True),
        norm_min_spread=table.number("norm_min_spread", 0.5),
    )
    table.finish()
    return limits


def _server_tls(document: _Document) -> ServerTls:
    table = document.table("tls")
    enabled = table.boolean("enabled", True)
    files = {key: table.path(key, None) for key in _TLS_FILES}
    given = [key for key, value in files.items() if value is not None]
    if given and not enabled:
        raise table.error(given[0], "is set but TLS is disabled (enabled = false)")
    if given and len(given) < len(_TLS_FILES):
        missing = next(key for key in _TLS_FILES if key not in given)
        raise table.error(missing, "is missing: give all of ca_certificate, certificate and private_key, "
                                   "or none to have them generated into the run folder")
    table.finish()
    return ServerTls(enabled=enabled, **files)


def _site_public_keys(document: _Document) -> tuple[Path, ...]:
    table = document.table("auth")
    keys = table.paths("site_public_keys")
    for index, key in enumerate(keys):
        try:
            load_public_key(key)
        except ConfigError as error:
            raise table.error(f"site_public_keys[{index}]", f"is not usable: {error}") from None
    table.finish()
    return keys


def _server_he(document: _Document) -> HomomorphicEncryption:
    table = document.table("he")
    enabled, context = _he_switch(table, "public_context")
    fingerprint = None
    if context is not None:
        fingerprint = _he_context(table, "public_context", context, load_public_context)
    table.finish()
    return HomomorphicEncryption(enabled=enabled, context=context, fingerprint=fingerprint)


def _he_switch(table: _Table, key: str) -> tuple[bool, Path | None]:
    """[he] enabled and the context file `key`, which is required exactly when enabled."""
    enabled = table.boolean("enabled", False)
    context = table.path(key, None)
    if enabled and context is None:
        raise table.error(key, "is required when enabled = true")
    if context is not None and not enabled:
        raise table.error(key, "is set but homomorphic encryption is off (enabled = false)")
    return enabled, context


def _he_context(table: _Table, key: str, path: Path, load: Callable[[Path], HeContext]) -> str:
    """The fingerprint of the context file `key`, loaded as its reader needs it (public or secret)."""
    try:
        return load(path).fingerprint
    except ConfigError as error:
        raise table.error(key, f"is not usable: {error}") from None


def load_site_config(path: str | Path) -> SiteConfig:
    """Read and check site.toml."""
    document = _Document(path, _SITE_TABLES)
    site = document.table("site")
    name = site.string("name")
    if not is_site_name(name):
        raise site.error("name", "must be 1-64 letters, digits, spaces, '.', '_' or '-' (a display name, "
                                 f"not a path), got {name!r}")
    modality = site.string("modality", choices=SITE_MODALITIES)
    data_dir = site.path("data_dir")
    if not data_dir.is_dir():
        raise site.error("data_dir", f"names {str(data_dir)!r}, which is not a folder")
    event_file = site.path("event_file", "site-events.jsonl", must_exist=False)
    site.finish()

    server = document.table("server")
    address = server.string("address")
    _check_address(server, "address", address)
    clientappio_port = server.integer("clientappio_port", 9094, maximum=MAX_PORT)
    join_timeout = server.number("join_timeout", SiteConfig.join_timeout)
    server.finish()

    tls = document.table("tls")
    tls_enabled = tls.boolean("enabled", True)
    ca_certificate = tls.path("ca_certificate", _REQUIRED if tls_enabled else None)
    if ca_certificate is not None and not tls_enabled:
        raise tls.error("ca_certificate", "is set but TLS is disabled (enabled = false)")
    tls.finish()

    auth = document.table("auth")
    node_key = auth.path("node_private_key", None)
    if node_key is not None:
        try:
            load_private_key(node_key)
        except ConfigError as error:
            raise auth.error("node_private_key", f"is not usable: {error}") from None
    auth.finish()

    he = document.table("he")
    _, he_secret_context = _he_switch(he, "secret_context")
    he_fingerprint = None
    if he_secret_context is not None:
        he_fingerprint = _he_context(he, "secret_context", he_secret_context, load_secret_context)
    masking = _masking(he, node_key)
    he.finish()
    return SiteConfig(
        source=document.source, name=name, modality=modality, data_dir=data_dir, event_file=event_file,
        server_address=address, clientappio_port=clientappio_port, join_timeout=join_timeout,
        tls_enabled=tls_enabled,
        ca_certificate=ca_certificate, node_private_key=node_key, he_secret_context=he_secret_context,
        he_fingerprint=he_fingerprint, privacy=_privacy(document.table("privacy")), masking=masking,
    )


def _masking(table: _Table, node_key: Path | None) -> MaskingSettings:
    """site.toml [he] peer_keys (a folder of the federation's node public keys to pin the others' mask
    keys to) and min_mask_sites (the fewest sites this site masks with), with the [auth] node key."""
    peer_keys = table.path("peer_keys", None)
    min_sites = table.integer("min_mask_sites", MIN_MASK_SITES, minimum=2)
    settings = MaskingSettings(node_key, peer_keys, min_sites)
    try:
        settings.pinned()
    except ConfigError as error:
        raise table.error("peer_keys", f"is not usable: {error}") from None
    return settings


def _privacy(table: _Table) -> PrivacySettings:
    """site.toml [privacy]: DP-SGD's settings (segmentation.settings.PrivacySettings says what they mean)."""
    default = PrivacySettings()
    values = {"dp": table.boolean("dp", default.dp)}
    for key in ("noise_multiplier", "max_grad_norm", "delta", "epsilon_budget"):
        values[key] = table.number(key, getattr(default, key), above=True)
    table.finish()
    try:
        return PrivacySettings(**values)
    except ConfigError as error:
        raise ConfigError(f"{table.source}: [privacy] {str(error).removeprefix('privacy ')}") from None


def _check_address(table: _Table, key: str, address: str) -> None:
    """HOST:PORT with a port Flower can connect to."""
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise table.error(key, f"must be HOST:PORT (e.g. 'fl.example.org:9092'), got {address!r}")
