"""What `fedseg server` and `fedseg site` start, from server.toml and site.toml.

FederationServer: a SuperLink for server.toml (TLS with the given certificates or ones generated into
the run folder, a database file so its state survives restarts, SuperNode authentication when sites'
keys are listed) and the run submitted to it. FederationSite: a site's SuperNode with the site's node
config, restarted when it exits after having been connected (e.g. the server lost its database), and the
site worker that runs its ClientApp tasks (federation.site_worker).
The demo and the end-to-end tests use the same classes as the commands.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Mapping
from pathlib import Path

import tomli_w

from federation.certificates import TlsFiles, default_names, existing_or_new_tls_files
from federation.config import ServerConfig, SiteConfig
from federation.he.checkpoint import ENCRYPTED_CHECKPOINT_NAME
from federation.processes import (
    ChildProcess,
    FlowerCli,
    FlowerProcessError,
    SuperLinkSettings,
    SuperNodeSettings,
    last_error_line,
    start_site_worker,
    start_superlink,
    start_supernode,
    write_private_file,
)
from federation.server_app import RESUME_KEY, SERVER_CONFIG_KEY
from federation.server_run import EVENTS_NAME
from federation.site_protocol import APP_NAME, APP_PUBLISHER
from federation.task import SiteSettings
from segmentation.errors import ConfigError
from segmentation.events import EventTail  # noqa: F401  (re-exported: the CLI and demo follow runs with it)
from segmentation.settings import CHECKPOINT_NAME

logger = logging.getLogger(__name__)

# The Flower app project `flwr run` bundles: only this pyproject, the code is the installed package.
_APP_PYPROJECT = {
    "build-system": {"requires": ["setuptools>=68"], "build-backend": "setuptools.build_meta"},
    "project": {"name": APP_NAME, "version": "1.0.0", "license": "Apache-2.0", "dependencies": [],
                "description": "FedSeg Workbench: federated segmentation with the installed fedseg package"},
    "tool": {"flwr": {"app": {
        "publisher": APP_PUBLISHER,
        "components": {"serverapp": "federation.server_app:app", "clientapp": "federation.client_app:app"},
        "config": {SERVER_CONFIG_KEY: "", RESUME_KEY: False},
    }}},
}
_CONNECTED = "SuperNode ID:"  # what flower-supernode 1.42 logs once the SuperLink accepted it
FINISHED = "finished"


def write_app_project(folder: Path) -> Path:
    """The app project folder `flwr run` takes (rewritten each time, so it always matches this version)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "pyproject.toml").write_text(tomli_w.dumps(_APP_PYPROJECT), encoding="utf-8")
    return folder


def server_tls(config: ServerConfig) -> TlsFiles | None:
    """The configured certificates, or ones generated into RUN_DIR/tls (kept for later sessions)."""
    tls = config.tls
    if not tls.enabled:
        return None
    if tls.generate:
        return existing_or_new_tls_files(config.run_dir / "tls", default_names(config.host))
    return TlsFiles(tls.ca_certificate, tls.certificate, tls.private_key)


def check_run_folder(config: ServerConfig, resume: bool) -> None:
    """Refuse to start over an existing run without --resume (before any process is started)."""
    for name in (CHECKPOINT_NAME, ENCRYPTED_CHECKPOINT_NAME):
        if (config.run_dir / name).exists() and not resume:
            raise ConfigError(f"{config.run_dir} already holds a run ({name}); continue it with --resume "
                              "or choose another [server] run_dir")


class FederationServer:
    """The SuperLink of a server.toml and the run submitted to it; a context manager that stops both."""

    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self.state_dir = config.run_dir / "flower"
        self.tls = server_tls(config)
        self.settings = SuperLinkSettings(
            host=config.host, port=config.fleet_port, state_dir=self.state_dir, tls=self.tls,
            supernode_auth=bool(config.site_public_keys),
        )
        self.cli = FlowerCli(self.settings.flwr_home, self.settings.local_address,
                             self.tls.ca_certificate if self.tls else None)
        self.superlink: ChildProcess | None = None
        self.run_id: int | None = None

    @property
    def events_path(self) -> Path:
        return self.config.run_dir / EVENTS_NAME

    def start(self) -> None:
        """Start the SuperLink and admit the listed sites' keys."""
        self.superlink = start_superlink(self.settings)
        for key in self.config.site_public_keys:
            self.cli.register_supernode(key)

    def submit(self, resume: bool = False, app_dir: Path | None = None) -> int:
        """Submit the federation's run (the ServerApp reads this server.toml); its Flower run ID.

        app_dir is the Flower app project to bundle; by default write_app_project's, whose components are
        this installed package's (the fault tests pass one with a misbehaving test ClientApp).
        """
        app_dir = app_dir or write_app_project(self.state_dir / "app")
        self.run_id = self.cli.submit(app_dir, {SERVER_CONFIG_KEY: str(self.config.source.resolve()),
                                                RESUME_KEY: resume})
        return self.run_id

    def status(self) -> str:
        """Flower's status of the submitted run ("running", "finished:completed", "finished:failed"...)."""
        if self.run_id is None:
            raise FlowerProcessError("no run was submitted")
        return self.cli.status(self.run_id)

    def check_alive(self) -> None:
        if self.superlink is not None and not self.superlink.alive():
            raise FlowerProcessError(f"flower-superlink exited: {last_error_line(self.superlink.log_tail())} "
                                     f"(log: {self.superlink.log_path})")

    def stop(self) -> None:
        """Stop the run if it still runs, then the SuperLink (which stops its ServerApp)."""
        if self.superlink is None:
            return
        if self.run_id is not None and self.superlink.alive():
            try:
                if not self.cli.status(self.run_id).startswith(FINISHED):
                    self.cli.stop(self.run_id)
            except FlowerProcessError:
                pass  # the SuperLink is going away anyway
        self.superlink.stop()
        self.superlink = None

    def __enter__(self) -> FederationServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class FederationSite:
    """A site's SuperNode for a site.toml and the site worker that runs its ClientApp tasks
    (federation.site_worker); supervise() restarts either when it ends.

    client_app MODULE:NAME replaces the installed ClientApp in the worker (the fault tests' misbehaving
    sites); the environment is the SuperNode's and the worker's."""

    def __init__(self, config: SiteConfig, environment: Mapping[str, str] | None = None,
                 restart_delay: float = 5.0, client_app: str | None = None) -> None:
        self.config = config
        self.environment = dict(environment or {})
        self.restart_delay = restart_delay
        self.client_app = client_app
        site = SiteSettings(config.name, config.modality, config.data_dir, config.event_file,
                            config.he_secret_context, config.privacy, config.masking)
        state_dir = config.event_file.parent / "supernode"
        self.settings = SuperNodeSettings(
            superlink=config.server_address, runtime_port=config.clientappio_port,
            node_config=site.to_node_config(), state_dir=state_dir,
            ca_certificate=config.ca_certificate if config.tls_enabled else None,
            private_key=config.node_private_key, task_secret=state_dir / "task-secret",
        )
        self._secret = secrets.token_bytes(32)  # made per start of the site, kept over restarts
        self.supernode: ChildProcess | None = None
        self.worker: ChildProcess | None = None
        self.restarts = 0

    def start(self) -> ChildProcess:
        """Start the worker (unless it runs), then the SuperNode."""
        assert self.settings.task_secret is not None
        write_private_file(self.settings.task_secret, self._secret)
        if self.worker is None or not self.worker.alive():
            self.worker = self._start_worker()
        self.supernode = start_supernode(self.settings, self.environment)
        return self.supernode

    def _start_worker(self) -> ChildProcess:
        return start_site_worker(self.settings, self.environment, self.client_app)

    def connected(self) -> bool:
        """Whether the current SuperNode was accepted by the SuperLink at some point."""
        return self.supernode is not None and _CONNECTED in self.supernode.log_text()

    def supervise(self) -> None:
        """Call periodically: restart a SuperNode that exited after connecting; raise if it never did.

        A SuperNode retries on its own while the server is unreachable; it exits when the SuperLink
        no longer knows it (a server restarted without its database) or refuses it (an unregistered
        key, a wrong CA). The first case is healed by starting again, the second needs the operator.
        """
        if self.worker is not None and not self.worker.alive():
            logger.warning("the site worker ended (%s); starting it again", self.worker.log_tail(1))
            self.worker = self._start_worker()  # same address and secret: the SuperNode keeps its own
        if self.supernode is None or self.supernode.alive():
            return
        if not self.connected():
            reason = last_error_line(self.supernode.log_tail(40))
            if self.config.node_private_key is not None:
                reason += " (is this site's public key in the server's [auth] site_public_keys?)"
            address = self.config.server_address
            raise FlowerProcessError(f"flower-supernode could not join {address}: {reason} "
                                     f"(log: {self.supernode.log_path})")
        time.sleep(self.restart_delay)
        self.restarts += 1
        self.start()

    def stop(self) -> None:
        for process in (self.supernode, self.worker):
            if process is not None:
                process.stop()
        self.supernode = self.worker = None

    def __enter__(self) -> FederationSite:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
