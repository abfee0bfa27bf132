"""The workbench's settings and recent files, kept in a TOML file in the user's config folder."""

from __future__ import annotations

import tomllib
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import platformdirs
import tomli_w

from federation.he.masking_settings import MIN_MASK_SITES
from segmentation.atomic import set_aside, write_text_atomic
from segmentation.settings import PrivacySettings

APP_NAME = "fedseg-workbench"
SETTINGS_NAME = "settings.toml"
RECENT_LIMIT = 10


@dataclass
class TrainingDefaults:
    """What the training page starts with. The plan is not among them: each run makes its own from its
    data (an older file's image_size is ignored on loading). The length is in optimisation steps, which
    the page turns into epochs of the chosen dataset, so that a large dataset never gets many epochs by
    default: 500 take the demo CT site from nothing to a mean test Dice of about 0.8 in one to two
    minutes on two CPU cores (bench/first_training.py). An older file's fixed epochs are ignored."""

    augmentation: str = "gin"
    steps: int = 500
    learning_rate: float = 1e-3
    batch_size: int = 16


@dataclass
class SiteDefaults:
    """The federation page's site settings (paths stay empty until chosen)."""

    name: str = ""
    modality: str = "ct"
    server_address: str = "127.0.0.1:9092"
    data_dir: str = ""
    ca_certificate: str = ""
    node_key: str = ""
    he_context: str = ""
    peer_keys: str = ""  # [he] peer_keys and min_mask_sites, used with the HE secret context
    min_mask_sites: int = MIN_MASK_SITES
    unencrypted: bool = False  # chosen explicitly: join without TLS (testing only)
    join_timeout: float = 60.0  # seconds to wait for the server to accept the site
    dp: bool = PrivacySettings.dp  # the site.toml's [privacy], as the page last joined with it
    noise_multiplier: float = PrivacySettings.noise_multiplier
    max_grad_norm: float = PrivacySettings.max_grad_norm
    delta: float = PrivacySettings.delta
    epsilon_budget: float = PrivacySettings.epsilon_budget


@dataclass
class Settings:
    """Everything the workbench remembers between sessions."""

    workspace: str = ""
    last_checkpoint: str = ""
    recent_studies: list[str] = field(default_factory=list)
    recent_datasets: list[str] = field(default_factory=list)
    training: TrainingDefaults = field(default_factory=TrainingDefaults)
    site: SiteDefaults = field(default_factory=SiteDefaults)

    @property
    def workspace_dir(self) -> Path:
        """Where demo data, runs and exports go by default."""
        return Path(self.workspace) if self.workspace else platformdirs.user_data_path(APP_NAME) / "workspace"

    def add_recent_study(self, path: str | Path) -> None:
        self.recent_studies = _push(self.recent_studies, path)

    def add_recent_dataset(self, path: str | Path) -> None:
        self.recent_datasets = _push(self.recent_datasets, path)


def default_settings_path() -> Path:
    return platformdirs.user_config_path(APP_NAME) / SETTINGS_NAME


class SettingsStore:
    """Loads and atomically saves Settings at one path. A file that cannot be read is renamed aside
    (settings.toml.damaged-YYYYmmdd-HHMMSS) before the defaults are used, so saving them loses nothing."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path or default_settings_path()
        self.problem = ""  # why the file was not used, shown once by the GUI

    def load(self) -> Settings:
        if not self.path.is_file():
            return Settings()
        try:
            data = tomllib.loads(self.path.read_text(encoding="utf-8"))
            return _from_dict(Settings, data)
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError, TypeError, ValueError) as error:
            self.problem = f"{self.path} could not be read ({type(error).__name__}); {self._set_aside()}"
            return Settings()

    def _set_aside(self) -> str:
        """Keep the unreadable file under a new name; the rest of the sentence for `problem`."""
        try:
            kept = set_aside(self.path, "damaged")
        except OSError as error:
            return f"it could not be set aside ({error.strerror}); using default settings"
        return f"it was kept as {kept}; using default settings"

    def save(self, settings: Settings) -> None:
        write_text_atomic(self.path, tomli_w.dumps(asdict(settings)))


def _push(items: list[str], path: str | Path) -> list[str]:
    """`path` first, without duplicates, at most RECENT_LIMIT entries."""
    text = str(path)
    return [text, *(item for item in items if item != text)][:RECENT_LIMIT]


def _from_dict(cls: type, data: dict[str, Any]) -> Any:
    """A dataclass from a TOML table: unknown keys are ignored, wrong types are a ValueError."""
    if not isinstance(data, dict):
        raise ValueError(f"expected a table for {cls.__name__}")
    values = {}
    for spec in fields(cls):
        if spec.name not in data:
            continue
        value, default = data[spec.name], getattr(cls(), spec.name)
        if hasattr(default, "__dataclass_fields__"):
            value = _from_dict(type(default), value)
        elif isinstance(default, list):
            if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
                raise ValueError(f"{spec.name} must be a list of strings")
        elif isinstance(default, float) and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        elif type(value) is not type(default):
            raise ValueError(f"{spec.name} must be a {type(default).__name__}")
        values[spec.name] = value
    return cls(**values)
