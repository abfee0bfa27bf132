"""Launching Flower's processes: commands and flags, certificates, stopping, readiness and flwr errors.

The real SuperLink/SuperNode runs are in tests/e2e; here every check is fast and uses small stand-in
children where a Flower process would take seconds.
"""

import os
import stat
import sys
import time
import tomllib
from pathlib import Path
from types import SimpleNamespace

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding

from federation import processes
from federation.certificates import default_names, existing_or_new_tls_files, generate_tls_files
from federation.processes import (
    FLOWER_ENVIRONMENT,
    FlowerCli,
    FlowerProcessError,
    SuperLinkSettings,
    SuperNodeSettings,
    flower_command,
    flower_environment,
    free_port,
    last_error_line,
    start_child,
    start_superlink,
    superlink_command,
    supernode_command,
    wait_until_listening,
)
from segmentation.errors import ConfigError


def test_generated_certificates_chain_to_the_ca_and_name_the_loopback(tmp_path):
    files = generate_tls_files(tmp_path, default_names("fl.example.org"))
    ca = x509.load_pem_x509_certificate(files.ca_certificate.read_bytes())
    server = x509.load_pem_x509_certificate(files.certificate.read_bytes())
    server.verify_directly_issued_by(ca)
    names = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert {"localhost", "fl.example.org"} <= set(names.get_values_for_type(x509.DNSName))
    assert "127.0.0.1" in {str(ip) for ip in names.get_values_for_type(x509.IPAddress)}
    assert stat.S_IMODE(files.private_key.stat().st_mode) == 0o600
    assert isinstance(ca.public_key(), ec.EllipticCurvePublicKey)
    # A later session keeps the CA the sites already trust.
    again = existing_or_new_tls_files(tmp_path, ["localhost"])
    assert again.ca_certificate.read_bytes() == ca.public_bytes(Encoding.PEM)


def test_every_child_has_telemetry_and_update_checks_off(tmp_path):
    environment = flower_environment(tmp_path / "home", {"FEDSEG_CACHE_DIR": "/c"})
    assert environment["FLWR_TELEMETRY_ENABLED"] == "0" and environment["FLWR_DISABLE_UPDATE_CHECK"] == "1"
    assert environment["FLWR_HOME"] == str(tmp_path / "home") and environment["FEDSEG_CACHE_DIR"] == "/c"
    assert environment["PATH"].split(":")[0] == str(Path(sys.executable).parent)
    assert set(FLOWER_ENVIRONMENT) <= set(environment)


def test_the_superlink_command_has_a_database_tls_and_auth(tmp_path):
    tls = generate_tls_files(tmp_path / "tls", ["localhost"])
    command = superlink_command(SuperLinkSettings("0.0.0.0", 9092, tmp_path, tls, supernode_auth=True))
    assert command[command.index("--database") + 1] == str(tmp_path / "superlink.db")
    assert command[command.index("--ssl-certfile") + 1] == str(tls.certificate)
    assert "--enable-supernode-auth" in command and "--insecure" not in command
    assert "--disable-runtime-dependency-installation" in command
    plain = superlink_command(SuperLinkSettings("127.0.0.1", 9092, tmp_path, None))
    assert "--insecure" in plain and "--ssl-certfile" not in plain
    assert SuperLinkSettings("0.0.0.0", 9092, tmp_path, None).local_address == "127.0.0.1:9092"


def test_supernode_auth_without_tls_is_refused_before_starting(tmp_path):
    with pytest.raises(ConfigError, match="needs TLS"):
        start_superlink(SuperLinkSettings("127.0.0.1", free_port(), tmp_path, None, supernode_auth=True))


def test_the_supernode_gets_its_node_config_as_a_toml_file(tmp_path):
    settings = SuperNodeSettings("fl.example.org:9092", 9100, {"site-name": 'CT "Main"', "data-dir": "/d x"},
                                 tmp_path, tmp_path / "ca.crt", tmp_path / "node.key")
    (tmp_path / "node-config.toml").write_text("left by an earlier start")
    (tmp_path / "node-config.toml").chmod(0o644)
    command = supernode_command(settings)
    node_config = command[command.index("--node-config") + 1]
    assert tomllib.loads(open(node_config).read()) == {"site-name": 'CT "Main"', "data-dir": "/d x"}
    assert os.stat(node_config).st_mode & 0o077 == 0  # it names the site's data: the site's user only
    assert command[command.index("--root-certificates") + 1] == str(tmp_path / "ca.crt")
    assert command[command.index("--auth-supernode-private-key") + 1] == str(tmp_path / "node.key")
    assert command[command.index("--port") + 1] == "9100"
    assert "--isolation" not in command and Path(command[0]).name == "flower-supernode"  # stock Flower


def test_a_supernode_with_a_task_secret_leaves_its_tasks_to_the_site_worker(tmp_path):
    settings = SuperNodeSettings("fl.example.org:9092", 9100, {}, tmp_path, None,
                                 task_secret=tmp_path / "task-secret")
    command = supernode_command(settings)
    # FedSeg's own launcher (shortened waits), Flower's process isolation, the secret for taking tasks.
    assert command[:5] == [sys.executable, "-m", "app.cli", "_flower", "flower-supernode"]
    assert command[command.index("--isolation") + 1] == "process"
    assert command[command.index("--superexec-auth-secret-file") + 1] == str(tmp_path / "task-secret")
    assert "--insecure" in command


def test_stop_ends_a_child_that_ignores_sigterm(tmp_path):
    code = ("import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('up', flush=True); "
            "time.sleep(60)")
    child = start_child("stubborn", [sys.executable, "-c", code], {}, tmp_path / "child.log")
    deadline = time.monotonic() + 20
    while "up" not in child.log_text() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert child.stop(grace=0.5) == -9 and not child.alive()


def test_waiting_for_a_port_reports_a_child_that_died(tmp_path):
    code = "import sys; print('\\x1b[91mERROR \\x1b[0m:  Address already in use'); sys.exit(3)"
    child = start_child("flower-superlink", [sys.executable, "-c", code], {}, tmp_path / "link.log")
    with pytest.raises(FlowerProcessError, match=r"exited with status 3: ERROR :  Address already in use"):
        wait_until_listening(child, "127.0.0.1", free_port(), timeout=30)


def test_the_telling_line_of_a_log_is_flowers_exit_message_or_its_last_error():
    log = "INFO: starting\nERROR: certificate verify failed\nINFO: shutting down\n"
    assert last_error_line(log) == "ERROR: certificate verify failed"
    exit_message = ("\x1b[91mERROR \x1b[0m:     Exit Code: 305\nFailed to initialize the connection.\n"
                    "[code: 2004] Failed to activate SuperNode.\n\nFor more information, visit: <...>\n"
                    "INFO:     Shutting down\n")
    assert last_error_line(exit_message) == ("Flower exit code 305: Failed to initialize the connection. "
                                             "[code: 2004] Failed to activate SuperNode.")
    assert last_error_line("one\ntwo\n") == "two" and last_error_line("") == "no output"


def test_a_flwr_command_against_no_superlink_fails_with_one_line(tmp_path):
    cli = FlowerCli(tmp_path / "home", f"127.0.0.1:{free_port()}", None)
    with pytest.raises(FlowerProcessError) as error:
        cli.status(1)
    assert str(error.value).startswith("flwr list failed: ") and "\n" not in str(error.value)
    assert 'insecure = true' in (tmp_path / "home" / "config.toml").read_text()


def test_a_frozen_bundle_runs_flower_through_the_executables_beside_its_own(tmp_path, monkeypatch):
    bundle = tmp_path / "fedseg-bundle"
    bundle.mkdir()
    (bundle / "flwr").write_bytes(b"\x7fELF")
    monkeypatch.setattr(sys, "frozen", True, raising=False)
    monkeypatch.setattr(sys, "executable", str(bundle / "fedseg"))
    assert flower_command("flwr") == str(bundle / "flwr")
    assert flower_environment(tmp_path / "home")["PATH"].split(os.pathsep)[0] == str(bundle)
    with pytest.raises(FlowerProcessError, match=r"flower-superlink is not installed in .*fedseg-bundle;"):
        flower_command("flower-superlink")


def test_on_windows_a_flower_command_is_its_exe(tmp_path, monkeypatch):
    (tmp_path / "flwr-clientapp.exe").write_bytes(b"MZ")
    monkeypatch.setattr(sys, "executable", str(tmp_path / "fedseg.exe"))
    with monkeypatch.context() as windows:
        windows.setattr(processes, "os", SimpleNamespace(name="nt"))  # only its os.name; Path stays POSIX
        assert flower_command("flwr-clientapp") == str(tmp_path / "flwr-clientapp.exe")
    with pytest.raises(FlowerProcessError, match="flwr-clientapp is not installed"):
        flower_command("flwr-clientapp")  # elsewhere the name has no suffix


def test_outside_a_bundle_flower_commands_are_next_to_python(monkeypatch):
    monkeypatch.delattr(sys, "frozen", raising=False)
    assert flower_command("flower-superlink") == str(Path(sys.executable).parent / "flower-superlink")
