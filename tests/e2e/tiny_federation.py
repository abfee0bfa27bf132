"""What the end-to-end tests share: tiny sites' data, their server.toml and site.toml, following a run, and
finding the processes a test started (directly or through Flower) so none is left behind."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from federation.processes import free_port
from segmentation.events import EventTail
from segmentation.synth import generate_dataset

if TYPE_CHECKING:
    from federation.launch import FederationSite

LABELS = ("background", "liver", "kidney", "spleen", "pancreas")


def site_datasets(root: Path, names: Iterable[str], cases: int, test_fraction: float) -> dict[str, Path]:
    """One tiny CT phantom dataset (16x16x8 volumes) per site name, seeded by the name's position."""
    folders = {name: root / name for name in names}
    for seed, folder in enumerate(folders.values()):
        generate_dataset(folder, "ct", cases, seed, size=16, test_fraction=test_fraction)
    return folders


def server_toml(port: int, rounds: int, round_timeout: float, extra: str = "", min_sites: int = 2) -> str:
    """Two sites (a round waits for `min_sites`), a two-level U-Net (the plan comes from the sites: 16x16
    slices); `extra` appends tables ([he], [auth] ...)."""
    return f"""
[server]
host = "127.0.0.1"
fleet_port = {port}
run_dir = "run"

[federation]
rounds = {rounds}
min_sites = {min_sites}
round_timeout = {round_timeout}

[model]
labels = {json.dumps(list(LABELS))}
channels = [8, 16]
batch_size = 8
{extra}"""


def site_toml(name: str, data: Path, port: int, ca_certificate: Path | str | None, extra: str = "") -> str:
    """A CT site of the tiny federation (without a CA certificate it connects without TLS); `extra` appends
    tables ([he], [auth] ...)."""
    tls = "enabled = false" if ca_certificate is None else f'ca_certificate = "{ca_certificate}"'
    return f"""
[site]
name = "{name}"
modality = "ct"
data_dir = "{data}"
event_file = "{name}/events.jsonl"

[server]
address = "127.0.0.1:{port}"
clientappio_port = {free_port()}

[tls]
{tls}
{extra}"""


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.5)


def follow_server(events: Path, sites: Sequence[FederationSite], timeout: float) -> None:
    """Keep the sites supervised until the server's event file says the run finished; fail on an error
    event."""
    tail, seen = EventTail(events, from_start=True), []

    def reached() -> bool:
        for site in sites:
            site.supervise()
        seen.extend(tail)
        assert not [event for event in seen if event["kind"] == "error"], seen[-1]
        return any(event["kind"] == "finished" for event in seen)

    wait_for(reached, timeout, "the server's 'finished' event")


def live_commands() -> dict[int, str]:
    """Command line of every live (not zombie) process but this one, by pid."""
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
    """Live processes a test started: those naming its folder, and those Flower started for them
    (flower-superexec, flwr-serverapp, flwr-clientapp name their parent with --parent-pid)."""
    commands = live_commands()
    family = {pid for pid, command in commands.items() if str(folder) in command}
    while True:
        more = {pid for pid, command in commands.items()
                if pid not in family and any(f"--parent-pid {parent} " in f"{command} " for parent in family)}
        if not more:
            return family
        family |= more
