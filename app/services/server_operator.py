"""Run the federation's server from the workbench: the server.toml form (written with tomli-w and checked
by the server's own loader before it replaces anything), `fedseg server` as a child process, and its run
folder's events followed into app.models.server.ServerRun.

The server holds no secret key: the form takes the sites' public node keys and the public HE context
only (federation.config refuses a secret one), and shows each key's fingerprint for the operator to
compare with what the sites show.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import tomli_w

from app.models.server import ServerRun, ServerState
from app.services.child_process import EXIT_INTERRUPTED, FedsegChild
from federation.config import FederationSettings, ModelSettings, ServerConfig, load_server_config
from federation.validation import ValidationLimits
from segmentation.atomic import set_aside, write_text_atomic
from segmentation.errors import ConfigError

SERVER_TOML = "server.toml"
LOG_NAME = "server.log"
BACKUP = "backup"  # the reason in a replaced server.toml's name: server.toml.backup-YYYYmmdd-HHMMSS
# The template's labels (assets/config/server.toml): the four abdominal organs of the paper's data.
DEFAULT_LABELS = ("background", "liver", "kidney", "spleen", "pancreas")
_OPERATOR_FLWR_HOME = "workbench-flwr-home"  # beside the server's own, which its process rewrites


@dataclass(frozen=True)
class TlsForm:
    """TLS of the SuperLink: all three files, or none to have them generated for this computer into
    the run folder when the server starts (federation.launch.server_tls)."""

    enabled: bool = True
    ca_certificate: str = ""
    certificate: str = ""
    private_key: str = ""

    def table(self) -> dict[str, Any]:
        files = {"ca_certificate": self.ca_certificate, "certificate": self.certificate,
                 "private_key": self.private_key}
        return {"enabled": self.enabled, **{key: value for key, value in files.items() if value}}


@dataclass(frozen=True)
class ServerForm:
    """The server page's fields, grouped by server.toml's tables with federation.config's own settings
    classes; paths as typed (relative ones are relative to the file's folder), "" when not used."""

    host: str = "0.0.0.0"
    fleet_port: int = 9092
    run_dir: str = "run"
    federation: FederationSettings = field(default_factory=lambda: FederationSettings(rounds=10, min_sites=2))
    model: ModelSettings = field(default_factory=lambda: ModelSettings(labels=DEFAULT_LABELS))
    validation: ValidationLimits = field(default_factory=ValidationLimits)
    tls: TlsForm = field(default_factory=TlsForm)
    site_public_keys: tuple[str, ...] = ()
    he_public_context: str = ""

    def to_toml(self) -> str:
        federation = asdict(self.federation)
        if self.federation.strategy != "fedprox":
            del federation["proximal_mu"]  # only fedprox reads it (the loader refuses it elsewhere)
        model = {key: value for key, value in asdict(self.model).items() if value is not None}
        he = self.he_public_context
        document = {
            "server": {"host": self.host, "fleet_port": self.fleet_port, "run_dir": self.run_dir},
            "federation": federation,
            "model": model,
            "validation": asdict(self.validation),
            "tls": self.tls.table(),
            "auth": {"site_public_keys": list(self.site_public_keys)},
            "he": {"enabled": bool(he), **({"public_context": he} if he else {})},
        }
        return tomli_w.dumps(document)

    @classmethod
    def from_config(cls, config: ServerConfig) -> ServerForm:
        """The form of a server.toml read by load_server_config (its paths resolved)."""
        tls = config.tls
        return cls(
            host=config.host, fleet_port=config.fleet_port, run_dir=str(config.run_dir),
            federation=config.federation, model=config.model, validation=config.validation,
            tls=TlsForm(tls.enabled, *(str(path or "") for path in (tls.ca_certificate, tls.certificate,
                                                                    tls.private_key))),
            site_public_keys=tuple(map(str, config.site_public_keys)),
            he_public_context=str(config.he.context or ""),
        )


def comma_numbers(text: str, what: str, integers: bool = False) -> tuple:
    """'1.5, 1.5, 3' as a tuple of numbers ("" is ()); a ConfigError naming `what` for anything else."""
    parts = [part.strip() for part in text.split(",") if part.strip()]
    try:
        return tuple(int(part) if integers else float(part) for part in parts)
    except ValueError:
        wanted = "integers" if integers else "numbers"
        raise ConfigError(f"{what} must be comma-separated {wanted}, got {text.strip()!r}") from None


def check_server_toml(text: str, path: Path) -> ServerConfig:
    """What load_server_config makes of `text` saved as `path` (relative paths resolve from its folder),
    without touching `path`: a ConfigError naming `path`, the table and the key when it is wrong."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, draft = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".check", dir=path.parent)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as stream:
            stream.write(text)
        config = load_server_config(draft)
    except ConfigError as error:
        raise ConfigError(str(error).replace(draft, str(path))) from None
    finally:
        Path(draft).unlink(missing_ok=True)
    return replace(config, source=path)


def save_server_toml(form: ServerForm, path: Path, replace_existing: bool = False) -> ServerConfig:
    """Check the form as `path`, then write it; an existing, different file is set aside first (with
    `replace_existing`; without it, a ConfigError). A file with the same text is left as it is."""
    text = form.to_toml()
    config = check_server_toml(text, path)
    if path.exists():
        if path.read_text(encoding="utf-8", errors="replace") == text:
            return config
        if not replace_existing:
            raise ConfigError(f"{path} already exists; replace it (the old file is kept under a new name) "
                              "or save under another name")
        set_aside(path, BACKUP)
    write_text_atomic(path, text)
    return config


def load_server_form(path: Path) -> ServerForm:
    """An existing server.toml as the form shows it (ConfigError when it cannot be used)."""
    return ServerForm.from_config(load_server_config(path))


def public_key_fingerprint(path: Path) -> str:
    """A site's public node key's fingerprint, as `fedseg keys node` printed it at the site."""
    from federation.keys import fingerprint, load_public_key

    return fingerprint(load_public_key(path))


def public_context_fingerprint(path: Path) -> str:
    """The HE key's fingerprint of a public context (a secret one is refused: the server must not hold it)."""
    from federation.he.context import load_public_context

    return load_public_context(path).fingerprint


def certificates_for_this_computer(server_toml: Path, run_dir: str, host: str) -> TlsForm:
    """The CA and server certificate for this computer in RUN_DIR/tls (RUN_DIR as server_toml names it),
    where the server would make them at start: made now, so the operator can send ca.crt to the sites
    first; kept when already there."""
    from federation.certificates import default_names, existing_or_new_tls_files

    folder = server_toml.parent / Path(run_dir or ServerForm.run_dir).expanduser() / "tls"
    files = existing_or_new_tls_files(folder, default_names(host))
    return TlsForm(True, str(files.ca_certificate), str(files.certificate), str(files.private_key))


@dataclass(frozen=True)
class StartCheck:
    """A saved server.toml ready to start; `existing_run` says why it can only continue (--resume) the run
    its folder holds, empty for a new run."""

    config: ServerConfig
    existing_run: str = ""


def check_start(path: Path) -> StartCheck:
    """Read server.toml and ask the server's own check what its run folder holds (loads torch: call it
    off the GUI thread)."""
    from federation.launch import check_run_folder

    config = load_server_config(path)
    try:
        check_run_folder(config, resume=False)
    except ConfigError as error:
        return StartCheck(config, str(error))
    return StartCheck(config)


class ServerJob(FedsegChild):
    """`fedseg server --config server.toml [--resume]`, its log in the run folder and the run's events."""

    def __init__(self, config: ServerConfig, resume: bool) -> None:
        from federation.server_run import EVENTS_NAME

        arguments = ["server", "--config", str(config.source), *(["--resume"] if resume else [])]
        super().__init__(arguments, config.run_dir / LOG_NAME, config.run_dir / EVENTS_NAME)
        self.config = config
        self.resume = resume


class ServerOperator:
    """The server this workbench started: start (or continue) it, stop it, and poll() its events and
    outcome into `run`."""

    def __init__(self) -> None:
        self.run = ServerRun()
        self.job: ServerJob | None = None
        self._settled = False  # the job's end was taken into `run`

    @property
    def running(self) -> bool:
        return self.job is not None and self.job.running

    def start(self, config: ServerConfig, resume: bool = False) -> None:
        """Start `fedseg server`; a continued run shows its earlier sessions' rounds at once."""
        from segmentation.events import read_events

        if self.running:
            raise ConfigError("the server is running already; stop it first")
        job = ServerJob(config, resume)
        history = list(read_events(job.events_path)) if resume and job.events_path.is_file() else []
        job.start()
        self.job, self._settled = job, False
        self.run.reset()
        self.run.apply_all(history)
        self.run.set_state(ServerState.STARTING, "starting the SuperLink…")

    def stop(self) -> None:
        """Ask the server to stop the run and the SuperLink (it can be continued later)."""
        if self.job is not None and self.job.running:
            self.job.request_stop()
            self.run.set_state(ServerState.STOPPING, "stopping the run and the SuperLink…")

    def poll(self) -> str | None:
        """Apply the new events; once the process has ended, settle the state. Returns the failure
        sentence once when the server failed, else None."""
        job = self.job
        if job is None or self._settled:
            return None
        self.run.apply_all(job.events())
        if job.running:
            return None
        self._settled = True
        self.run.set_online(None)
        if job.exit_code == 0:
            self.run.set_state(ServerState.FINISHED, self.run.message or "finished")
        elif job.exit_code == EXIT_INTERRUPTED or job.stop_requested:
            saved = f"; Start continues it after round {self.run.completed}" if self.run.completed else ""
            self.run.set_state(ServerState.STOPPED, f"stopped{saved}")
        else:
            message = job.failure_message()
            self.run.set_state(ServerState.FAILED, message)
            return message
        return None

    def online_sites(self) -> int:
        """How many sites the SuperLink counts as online now (runs `flwr supernode list`: seconds; call it
        off the GUI thread, and only while the server runs, after it made its certificates)."""
        from federation.launch import server_tls
        from federation.processes import FlowerCli, SuperLinkSettings

        if self.job is None:
            raise ConfigError("no server was started")
        config = self.job.config
        tls = server_tls(config)
        settings = SuperLinkSettings(config.host, config.fleet_port, config.run_dir / "flower", tls)
        cli = FlowerCli(settings.state_dir / _OPERATOR_FLWR_HOME, settings.local_address,
                        tls.ca_certificate if tls is not None else None)
        return cli.online_nodes()

    def close(self, keep_running: bool) -> None:
        """The window closes: stop the server unless the operator chose to keep it running."""
        if not keep_running:
            self.stop()

    @property
    def model_path(self) -> Path | None:
        """The run's global model file (encrypted with HE), once a round was saved."""
        if self.job is None or not self.run.completed:
            return None
        from federation.he.checkpoint import ENCRYPTED_CHECKPOINT_NAME
        from segmentation.settings import CHECKPOINT_NAME

        config = self.job.config
        return config.run_dir / (ENCRYPTED_CHECKPOINT_NAME if config.he.enabled else CHECKPOINT_NAME)
