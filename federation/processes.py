"""Flower's own processes as children of FedSeg: flower-superlink, flower-supernode and the flwr CLI.

Every child gets telemetry and update checks off, runtime dependency installation off (the app's code
is this installed package; a site must never pip-install what a server sends), its own FLWR_HOME (so
nothing lands in the user's ~/.flwr) and Flower's commands first on PATH (Flower starts
flower-superexec, flwr-serverapp and flwr-clientapp by name): the venv's bin folder, or the folder of a
frozen desktop bundle, whose executables named after Flower's commands run them (installers/).
Long-running children get their own session, so a Ctrl-C in the terminal reaches FedSeg, which then
stops them in order.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tomli_w

from federation.certificates import TlsFiles
from federation.keys import write_new_file
from segmentation.errors import ConfigError, FedSegError

FLOWER_ENVIRONMENT = {
    "FLWR_TELEMETRY_ENABLED": "0",
    "FLWR_DISABLE_UPDATE_CHECK": "1",
    "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
    "PYTHONUNBUFFERED": "1",
    # The SuperExec looks for a new ClientApp/ServerApp task every second by default: a short round
    # would wait for it twice. A poll is one request to its own SuperNode/SuperLink on this machine.
    "FLWR_SUPEREXEC_TASK_POLL_INTERVAL": "0.2",
}
CONNECTION_NAME = "fedseg"  # the SuperLink connection the flwr CLI uses, in FLWR_HOME/config.toml
_STOP_GRACE_SECONDS = 10.0
_ANSI_COLOUR = re.compile(r"\x1b\[[0-9;]*m")
_EXIT_CODE = re.compile(r"Exit Code: (\d+)")


class FlowerProcessError(FedSegError):
    """A Flower process could not be started, did not become ready, or a flwr command failed."""


def flower_bin() -> Path:
    """The folder of Flower's commands: next to this Python (a venv's bin/ or Scripts\\), or in a frozen
    bundle next to its executable, where one executable per Flower command sits beside `fedseg`."""
    return Path(sys.executable).parent


def flower_environment(flwr_home: Path, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """This process's environment plus FLOWER_ENVIRONMENT, FLWR_HOME and flower_bin() first on PATH."""
    environment = {**os.environ, **FLOWER_ENVIRONMENT, **(extra or {}), "FLWR_HOME": str(flwr_home)}
    environment["PATH"] = os.pathsep.join([str(flower_bin()), environment.get("PATH", "")])
    return environment


def flower_command(name: str) -> str:
    """The path of a Flower command in flower_bin(): NAME.exe on Windows, NAME elsewhere."""
    path = flower_bin() / (f"{name}.exe" if os.name == "nt" else name)
    if not path.exists():
        raise FlowerProcessError(f"{name} is not installed in {path.parent}; reinstall fedseg")
    return str(path)


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on right now (for tests and the one-machine demo)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


@dataclass
class ChildProcess:
    """A started child with its log file; stop() ends it and whatever it started in its session."""

    name: str
    popen: subprocess.Popen
    log_path: Path
    log_start: int = 0  # where this child's output begins in a log that earlier children appended to

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def log_text(self) -> str:
        """Everything this child has logged so far."""
        try:
            with open(self.log_path, "rb") as stream:
                stream.seek(self.log_start)
                return stream.read().decode("utf-8", errors="replace")
        except OSError:
            return ""

    def log_tail(self, lines: int = 15) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    def interrupt(self) -> None:
        """Ctrl-C for this child alone: a `fedseg` command then finishes its step, saves and stops what it
        started, in order (Windows has no SIGINT for another process: it is terminated)."""
        if not self.alive():
            return
        if os.name == "nt":
            self.popen.terminate()
        else:
            self.popen.send_signal(signal.SIGINT)

    def stop(self, grace: float = _STOP_GRACE_SECONDS) -> int:
        """Ask the child to end (Flower shuts down cleanly on SIGTERM), kill it after `grace` seconds; the
        exit status."""
        if self.alive():
            self._end(kill=False)
            try:
                return self.popen.wait(grace)
            except subprocess.TimeoutExpired:
                pass
        self._end(kill=True)
        return self.popen.wait()

    def _end(self, kill: bool) -> None:
        """POSIX: SIGTERM or SIGKILL to the child's whole session (it leads one), else to the child.
        Windows has neither: CTRL_BREAK to the child's process group, or TerminateProcess."""
        if os.name == "nt":
            if kill:
                self.popen.kill()
            else:
                self.popen.send_signal(signal.CTRL_BREAK_EVENT)
            return
        number = signal.SIGKILL if kill else signal.SIGTERM
        try:
            os.killpg(self.popen.pid, number)
        except (ProcessLookupError, PermissionError):
            try:
                self.popen.send_signal(number)
            except ProcessLookupError:
                pass


def _hear_ctrl_c() -> None:
    """In the child before exec: SIGINT back to its default, so a parent started with SIGINT ignored (a
    background job) can still stop its children the way it asks them to."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def start_child(name: str, command: Sequence[str], environment: Mapping[str, str], log_path: Path,
                cwd: Path | None = None) -> ChildProcess:
    """Start `command` in its own session (Windows: process group) with stdout and stderr appended to
    log_path."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        start = log.tell()
        popen = subprocess.Popen(
            list(command), stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            env=dict(environment), cwd=cwd, start_new_session=os.name == "posix",
            preexec_fn=_hear_ctrl_c if os.name == "posix" else None,
            creationflags=getattr(subprocess, "CREATE_NEW_PROCESS_GROUP", 0),  # Windows: see _end
        )
    return ChildProcess(name, popen, log_path, start)


def wait_until_listening(process: ChildProcess, host: str, port: int, timeout: float = 60.0) -> None:
    """Return once host:port accepts TCP connections; FlowerProcessError if the process dies or is slow."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not process.alive():
            raise FlowerProcessError(f"{process.name} exited with status {process.popen.returncode}: "
                                     f"{last_error_line(process.log_tail())} (log: {process.log_path})")
        try:
            with socket.create_connection((host, port), timeout=1.0):
                return
        except OSError:
            time.sleep(0.25)
    raise FlowerProcessError(f"{process.name} did not listen on {host}:{port} within {timeout:.0f} s "
                             f"(log: {process.log_path})")


def last_error_line(log: str) -> str:
    """The most telling line of a Flower log tail: Flower's exit message (the lines after "Exit Code: N",
    joined), else the last error line, else the last line."""
    lines = [line.strip() for line in _ANSI_COLOUR.sub("", log).splitlines()]
    for index in range(len(lines) - 1, -1, -1):
        if match := _EXIT_CODE.search(lines[index]):
            message = []
            for line in lines[index + 1:]:
                if not line:
                    break
                message.append(line)
            return f"Flower exit code {match.group(1)}: {' '.join(message)}".rstrip(": ")
    lines = [line for line in lines if line]
    for line in reversed(lines):
        if "error" in line.lower():
            return line
    return lines[-1] if lines else "no output"


# -- SuperLink ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class SuperLinkSettings:
    """How to start a SuperLink: its one HTTP(S) port serves the Fleet, Control and Runtime APIs."""

    host: str
    port: int
    state_dir: Path  # the database, FLWR_HOME and the log
    tls: TlsFiles | None  # None: plain HTTP (tests on one machine only)
    supernode_auth: bool = False

    @property
    def local_address(self) -> str:
        """Where processes on this machine reach it (a wildcard bind answers on the loopback)."""
        host = "127.0.0.1" if self.host in ("0.0.0.0", "", "::", "[::]") else self.host
        return f"{host}:{self.port}"

    @property
    def flwr_home(self) -> Path:
        return self.state_dir / "flwr-home"


def superlink_command(settings: SuperLinkSettings) -> list[str]:
    command = [
        flower_command("flower-superlink"), "--host", settings.host, "--port", str(settings.port),
        "--database", str(settings.state_dir / "superlink.db"), "--disable-runtime-dependency-installation",
    ]
    if settings.tls is None:
        command.append("--insecure")
    else:
        tls = settings.tls
        command += ["--ssl-ca-certfile", str(tls.ca_certificate), "--ssl-certfile", str(tls.certificate),
                    "--ssl-keyfile", str(tls.private_key)]
    if settings.supernode_auth:
        command.append("--enable-supernode-auth")
    return command


def start_superlink(settings: SuperLinkSettings, timeout: float = 60.0) -> ChildProcess:
    """Start flower-superlink and wait until its port accepts connections."""
    if settings.supernode_auth and settings.tls is None:
        raise ConfigError("SuperNode authentication needs TLS: enable [tls] or empty [auth] site_public_keys")
    settings.flwr_home.mkdir(parents=True, exist_ok=True)
    environment = flower_environment(settings.flwr_home)
    process = start_child("flower-superlink", superlink_command(settings), environment,
                          settings.state_dir / "superlink.log", cwd=settings.state_dir)
    host, _, port = settings.local_address.rpartition(":")
    try:
        wait_until_listening(process, host, int(port), timeout)
    except BaseException:
        process.stop()
        raise
    return process


# -- the flwr CLI ----------------------------------------------------------------------------------

class FlowerCli:
    """The flwr commands FedSeg needs, run against one SuperLink through a private FLWR_HOME."""

    def __init__(self, flwr_home: Path, address: str, ca_certificate: Path | None) -> None:
        self.flwr_home = flwr_home
        self.environment = flower_environment(flwr_home)
        flwr_home.mkdir(parents=True, exist_ok=True)
        security = ({"insecure": True} if ca_certificate is None
                    else {"root-certificates": str(Path(ca_certificate).resolve())})
        superlink = {"default": CONNECTION_NAME, CONNECTION_NAME: {"address": address, **security}}
        (flwr_home / "config.toml").write_text(tomli_w.dumps({"superlink": superlink}), encoding="utf-8")

    def submit(self, app_dir: Path, run_config: Mapping[str, Any]) -> int:
        """`flwr run`: bundle the app project, start a run with these run-config values; its run ID."""
        overrides = self.flwr_home / "run-config.toml"
        overrides.write_text(tomli_w.dumps(dict(run_config)), encoding="utf-8")
        reply = self._call("run", str(app_dir), CONNECTION_NAME, "--run-config", str(overrides))
        return int(reply["run-id"])

    def status(self, run_id: int) -> str:
        """The run's status as Flower words it, e.g. "running" or "finished:completed"."""
        reply = self._call("list", CONNECTION_NAME, "--run-id", str(run_id))
        return str(reply["runs"][0]["status"])

    def stop(self, run_id: int) -> None:
        self._call("stop", str(run_id), CONNECTION_NAME)

    def online_nodes(self) -> int:
        """How many SuperNodes the SuperLink counts as online now (`flwr supernode list`)."""
        reply = self._call("supernode", "list", CONNECTION_NAME)
        return sum(1 for node in reply.get("nodes", []) if node.get("status") == "online")

    def register_supernode(self, public_key: Path) -> None:
        """Admit a site's key; a key registered in an earlier session is fine."""
        try:
            self._call("supernode", "register", str(public_key), CONNECTION_NAME)
        except FlowerProcessError as error:
            if "already" not in str(error).lower():
                raise

    def _call(self, *arguments: str, timeout: float = 120.0) -> dict[str, Any]:
        """Run one flwr command with --format json; its JSON reply, or FlowerProcessError with its message."""
        command = [flower_command("flwr"), *arguments, "--format", "json"]
        try:
            done = subprocess.run(command, env=self.environment, capture_output=True, text=True,
                                  timeout=timeout, stdin=subprocess.DEVNULL, cwd=self.flwr_home)
        except subprocess.TimeoutExpired:
            raise FlowerProcessError(f"flwr {arguments[0]} did not answer within {timeout:.0f} s") from None
        reply = _last_json_object(done.stdout)
        if done.returncode != 0 or not reply.get("success", False):
            message = last_error_line(str(reply.get("error-message") or done.stderr or done.stdout))
            raise FlowerProcessError(f"flwr {arguments[0]} failed: {message}")
        return reply


def _last_json_object(text: str) -> dict[str, Any]:
    """The JSON object a flwr command printed last (it may print a notice before it)."""
    start = text.find("{")
    while start != -1:
        try:
            value = json.loads(text[start:])
            return value if isinstance(value, dict) else {}
        except json.JSONDecodeError:
            start = text.find("{", start + 1)
    return {}


# -- SuperNode ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class SuperNodeSettings:
    """How to start a site's SuperNode."""

    superlink: str  # HOST:PORT of the SuperLink
    runtime_port: int  # the local port of its ClientApp I/O API
    node_config: Mapping[str, str]
    state_dir: Path  # FLWR_HOME, the node-config file and the log
    ca_certificate: Path | None  # None: plain HTTP (tests on one machine only)
    private_key: Path | None = None  # SuperNode authentication
    # The file of the secret with which the site worker takes the SuperNode's ClientApp tasks and runs them
    # itself (Flower's `--isolation process`, with the waits of federation.flower_internals shortened).
    # None: stock Flower, which starts a flwr-clientapp process for every message.
    task_secret: Path | None = None

    @property
    def flwr_home(self) -> Path:
        return self.state_dir / "flwr-home"

    @property
    def runtime_address(self) -> str:
        return f"127.0.0.1:{self.runtime_port}"


def supernode_command(settings: SuperNodeSettings) -> list[str]:
    node_config = settings.state_dir / "node-config.toml"  # it names the site's data
    write_private_file(node_config, tomli_w.dumps(dict(settings.node_config)).encode("utf-8"))
    arguments = ["--superlink", settings.superlink, "--port", str(settings.runtime_port),
                 "--node-config", str(node_config)]
    if settings.ca_certificate is not None:
        arguments += ["--root-certificates", str(settings.ca_certificate)]
    else:
        arguments.append("--insecure")
    if settings.private_key is not None:
        arguments += ["--auth-supernode-private-key", str(settings.private_key)]
    if settings.task_secret is None:
        return [flower_command("flower-supernode"), *arguments]
    # `fedseg _flower flower-supernode` (app/commands/flower_entry.py) shortens its waits; sys.executable
    # is `fedseg` itself in a desktop bundle, which accepts this form too.
    return [sys.executable, "-m", "app.cli", "_flower", "flower-supernode", *arguments,
            "--isolation", "process", "--superexec-auth-secret-file", str(settings.task_secret)]


def write_private_file(path: Path, data: bytes) -> None:
    """Replace `path` with `data`, readable by the site's user only from the start (made afresh: a file of
    an earlier start keeps its mode otherwise)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)
    write_new_file(path, data, 0o600)


def start_supernode(
    settings: SuperNodeSettings, environment: Mapping[str, str] | None = None
) -> ChildProcess:
    """Start flower-supernode; it keeps retrying until the SuperLink answers (Flower's own backoff)."""
    settings.flwr_home.mkdir(parents=True, exist_ok=True)
    return start_child("flower-supernode", supernode_command(settings),
                       flower_environment(settings.flwr_home, environment),
                       settings.state_dir / "supernode.log", cwd=settings.state_dir)


def start_site_worker(settings: SuperNodeSettings, environment: Mapping[str, str] | None = None,
                      client_app: str | None = None) -> ChildProcess:
    """`fedseg _site-worker`, which runs the SuperNode's ClientApp tasks (settings.task_secret must be
    set); client_app MODULE:NAME replaces federation.client_app:app (the fault tests and the benchmark)."""
    if settings.task_secret is None:
        raise ConfigError("a site worker needs a SuperNode started with a task secret")
    command = [sys.executable, "-m", "app.cli", "_site-worker", "--runtime-address", settings.runtime_address,
               "--secret-file", str(settings.task_secret), "--parent-pid", str(os.getpid())]
    if client_app is not None:
        command += ["--client-app", client_app]
    # Flower's settings and FLWR_HOME too (telemetry and update checks off): the worker imports flwr.
    return start_child("site worker", command, flower_environment(settings.flwr_home, environment),
                       settings.state_dir / "site-worker.log", cwd=settings.state_dir)
