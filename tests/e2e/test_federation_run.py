"""A real federation on 127.0.0.1: `fedseg server` (SuperLink with generated TLS certificates, ServerApp)
and two `fedseg site` processes (SuperNodes, ClientApps) train two rounds on tiny demo data.

What must hold: the server exits 0 after the run; metrics.jsonl has both sites for every round and the
final evaluation; model.pt holds round 2; each site leaves cleanly on SIGTERM; and no process the test
started (directly or through Flower) is left behind.
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from federation.processes import free_port
from segmentation.checkpoint import load_checkpoint
from segmentation.synth import generate_dataset

pytestmark = pytest.mark.slow

FEDSEG = str(Path(sys.executable).parent / "fedseg")
RUN_TIMEOUT = 300  # seconds; the run takes about a minute and a half on two loaded CPU cores


def _live_commands() -> dict[int, str]:
    commands = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z":
            commands[int(entry.name)] = command
    return commands


def flower_family(folder: Path) -> set[int]:
    """Live processes this test started: those naming its folder, and those Flower started for them
    (flower-superexec, flwr-serverapp, flwr-clientapp name their parent with --parent-pid)."""
    commands = _live_commands()
    family = {pid for pid, command in commands.items() if str(folder) in command}
    while True:
        more = {pid for pid, command in commands.items()
                if pid not in family and any(f"--parent-pid {parent} " in f"{command} " for parent in family)}
        if not more:
            return family
        family |= more


@pytest.fixture
def launched(tmp_path):
    """Start commands as children; afterwards stop whatever is left of them and of what they started."""
    children: list[subprocess.Popen] = []

    def launch(name: str, *arguments: str) -> subprocess.Popen:
        log = open(tmp_path / f"{name}.out", "w")  # noqa: SIM115 - closed with the child below
        environment = {**os.environ, "FEDSEG_CACHE_DIR": str(tmp_path / "cache")}
        child = subprocess.Popen([FEDSEG, *arguments], stdout=log, stderr=subprocess.STDOUT, env=environment,
                                 cwd=tmp_path, start_new_session=True)
        child.log = log
        children.append(child)
        return child

    try:
        yield launch
    finally:
        for child in children:
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
        for child in children:
            try:
                child.wait(30)
            except subprocess.TimeoutExpired:
                child.kill()
            child.log.close()
        for pid in flower_family(tmp_path):  # Flower's processes, if a command could not stop them
            os.kill(pid, signal.SIGKILL)


def wait_for(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.5)


def write_site(tmp_path: Path, name: str, data: Path, port: int) -> Path:
    path = tmp_path / f"{name}.toml"
    path.write_text(f"""
[site]
name = "{name}"
modality = "ct"
data_dir = "{data}"
event_file = "{name}/events.jsonl"

[server]
address = "127.0.0.1:{port}"
clientappio_port = {free_port()}

[tls]
ca_certificate = "run/tls/ca.crt"
""")
    return path


def test_two_sites_train_two_rounds_through_real_flower_processes(tmp_path, launched):
    folders = {name: tmp_path / "data" / name for name in ("Hospital A", "Hospital B")}
    datasets = {name: generate_dataset(folder, "ct", 3, seed, size=16, test_fraction=0.34)
                for seed, (name, folder) in enumerate(folders.items())}
    labels = json.dumps([name for _, name in sorted(datasets["Hospital A"].labels.items())])
    port = free_port()
    (tmp_path / "server.toml").write_text(f"""
[server]
host = "127.0.0.1"
fleet_port = {port}
run_dir = "run"

[federation]
rounds = 2
min_sites = 2
round_timeout = 120

[model]
labels = {labels}
channels = [8, 16]
image_size = 16
batch_size = 8
""")
    server = launched("server", "server", "--config", "server.toml")
    wait_for(lambda: (tmp_path / "run" / "tls" / "ca.crt").exists() or server.poll() is not None, 60,
             "the server's certificates")
    sites = [launched(name, "site", "--config", str(write_site(tmp_path, name, folder, port)))
             for name, folder in folders.items()]

    assert server.wait(RUN_TIMEOUT) == 0, (tmp_path / "server.out").read_text()
    output = (tmp_path / "server.out").read_text()
    assert "run finished" in output and "Hospital A" in output

    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    accepted = {(r["round"], r["phase"], r["site"]) for r in records if r["status"] == "accepted"}
    expected = {(n, "train", s) for n in (1, 2) for s in datasets} | {(2, "evaluate", s) for s in datasets}
    assert accepted == expected
    assert all("before/dice" in r["metrics"] and "after/dice" in r["metrics"]
               for r in records if r["phase"] == "train")
    assert load_checkpoint(tmp_path / "run" / "model.pt").round == 2

    site_log = (tmp_path / "Hospital A" / "events.jsonl").read_text()
    site_events = [json.loads(line) for line in site_log.splitlines()]
    assert {e["round"] for e in site_events if e["kind"] == "finished"} == {1, 2}
    assert {(e["round"], e["site"]) for e in site_events if e["kind"] == "site-metrics"} >= {
        (1, "Hospital A"), (1, "Hospital B"), (2, "Hospital B")}

    started = flower_family(tmp_path)
    assert len(started) >= 4  # two fedseg site commands, their SuperNodes and those SuperNodes' SuperExecs
    for site in sites:
        site.send_signal(signal.SIGTERM)
    assert [site.wait(60) for site in sites] == [0, 0]
    wait_for(lambda: not started & set(_live_commands()), 60, "every Flower process to end")
