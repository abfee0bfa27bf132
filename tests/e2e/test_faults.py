"""Faults in a real federation on 127.0.0.1 (SuperLink, SuperNodes, ClientApps; TLS on), on tiny data.

- A site SIGKILLed mid-round: the round completes with the other site within the round timeout, the
  run completes, and the site, started again, takes part in the next round.
- The server SIGKILLed mid-round and resumed: the run continues after its last checkpointed round, every
  round is recorded once, and model.pt is a complete checkpoint whenever it is read.
- A site that joins after round 2 takes part in every round from its first one on.
- A poisoned site (a NaN weight, a wrong shape, num-examples = 1e9, one per round): each reply is dropped
  with its reason, the run completes, and the final model equals the honest site's alone.
- With node authentication on, a run whose sites are all registered trains and evaluates every one of them;
  a site whose node key the server did not register is refused.

Misbehaving sites run tests/e2e/faulty_client_app.py in their site worker (FederationSite client_app).
"""

from __future__ import annotations

import os
import signal
from contextlib import ExitStack
from pathlib import Path

import numpy as np
import pytest
from faulty_client_app import FAULT_VARIABLE, HANG, HOLD, POISON, POISONS, RELEASE_VARIABLE
from flwr.app import Context, Message, RecordDict
from flwr.supercore.task_identity import TaskIdentity
from tiny_federation import flower_family, live_commands, server_toml, site_datasets, site_toml, wait_for

from federation import client_app
from federation.config import load_server_config, load_site_config
from federation.keys import generate_node_keys
from federation.launch import EventTail, FederationServer, FederationSite
from federation.processes import FlowerProcessError, free_port
from federation.server_run import EVENTS_NAME, METRICS_NAME, read_metrics, run_server
from federation.task import SiteSettings
from segmentation.checkpoint import load_checkpoint
from segmentation.events import read_events

pytestmark = pytest.mark.slow

SITES = ("Site A", "Site B")
RUN_TIMEOUT = 240  # seconds for a whole run on two loaded CPU cores (a few rounds of tiny training)
ROUND_TIMEOUT = 60  # the servers' [federation] round_timeout in these tests
FAULTY_APP = Path(__file__).with_name("faulty_client_app.py")


@pytest.fixture(scope="module")
def site_data(tmp_path_factory) -> dict[str, Path]:
    """Two sites' tiny CT phantom datasets: 2 training cases and 1 test case of 16x16x8 each."""
    return site_datasets(tmp_path_factory.mktemp("data"), SITES, cases=3, test_fraction=0.34)


class Federation:
    """server.toml and site.toml files in one folder, and the processes started from them."""

    def __init__(self, folder: Path, data: dict[str, Path], processes: ExitStack) -> None:
        self.folder = folder
        self.data = data
        self.processes = processes
        self.port = free_port()
        self.server: FederationServer | None = None
        self.release = folder / "release"  # a site held in round 2 goes on once this file exists

    def write_server(self, rounds: int, auth: str = "", min_sites: int = 2) -> Path:
        path = self.folder / "server.toml"
        path.write_text(server_toml(self.port, rounds, ROUND_TIMEOUT, auth, min_sites))
        return path

    def start_server(self, rounds: int, auth: str = "", min_sites: int = 2) -> FederationServer:
        self.server = self.processes.enter_context(FederationServer(load_server_config(
            self.write_server(rounds, auth, min_sites))))
        self.server.start()
        return self.server

    def start_site(self, name: str, fault: str = "", key: Path | None = None) -> FederationSite:
        """A site; with a fault, its worker runs the test ClientApp, which FEDSEG_TEST_FAULT makes
        misbehave."""
        path = self.folder / f"{name}.toml"
        auth = f'[auth]\nnode_private_key = "{key}"\n' if key else ""
        path.write_text(site_toml(name, self.data[name], self.port, "run/tls/ca.crt", auth))
        environment = {FAULT_VARIABLE: fault, RELEASE_VARIABLE: str(self.release),
                       "PYTHONPATH": str(FAULTY_APP.parent)} if fault else {}
        site = FederationSite(load_site_config(path), environment, restart_delay=1,
                              client_app="faulty_client_app:app" if fault else None)
        self.processes.enter_context(site)
        site.start()
        return site

    def follow(self, sites: list[FederationSite], until: str = "finished") -> None:
        """Keep the sites supervised until the server's event file has an `until` event."""
        tail = EventTail(self.folder / "run" / EVENTS_NAME, from_start=True)
        seen: list[dict] = []

        def reached() -> bool:
            for site in sites:
                site.supervise()
            seen.extend(tail)
            assert not [event for event in seen if event["kind"] == "error"], seen[-1]
            return any(event["kind"] == until for event in seen)

        wait_for(reached, RUN_TIMEOUT, f"the server's {until!r} event")

    def events(self) -> list[dict]:
        return list(read_events(self.folder / "run" / EVENTS_NAME))

    def records(self) -> dict[tuple[int, str, str], str]:
        """(round, phase, site) -> status of every reply the server recorded."""
        records = read_metrics(self.folder / "run" / METRICS_NAME)
        return {(record.round, record.phase, record.site): record.status for record in records}


@pytest.fixture
def federation(tmp_path, site_data):
    """A Federation in tmp_path; afterwards every process it started, and whatever Flower started, ends."""
    with ExitStack() as processes:
        yield Federation(tmp_path, site_data, processes)
    for pid in flower_family(tmp_path):
        os.kill(pid, signal.SIGKILL)


def describe_processes(pids: list[int]) -> str:
    """State, kernel wait channel and parent of each process, to say why one did not end (a failure's
    message, for the flaky case of a ServerApp outliving its killed SuperLink)."""
    lines = []
    for pid in pids:
        proc = Path(f"/proc/{pid}")
        try:
            state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
            wchan = (proc / "wchan").read_text()
            arguments = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            lines.append(f"{pid}: gone")
            continue
        flag = b"--parent-pid"
        parent = arguments[arguments.index(flag) + 1].decode() if flag in arguments else "?"
        try:
            parent_state = Path(f"/proc/{parent}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, ValueError):
            parent_state = "gone"
        lines.append(f"{pid}: state {state}, waiting in {wchan or '-'}, "
                     f"--parent-pid {parent} ({parent_state})")
    return "; ".join(lines)


def server_apps_of(folder: Path) -> list[int]:
    """Live flwr-serverapp processes whose Flower home is under `folder`."""
    found = []
    for pid, command in live_commands().items():
        if "flwr-serverapp" in command:
            try:
                environment = Path(f"/proc/{pid}/environ").read_bytes()
            except OSError:
                continue
            if str(folder).encode() in environment:
                found.append(pid)
    return found


def kill_group(pid: int) -> None:
    """SIGKILL a process and everything in its session, as a power cut would."""
    os.killpg(pid, signal.SIGKILL)


def test_a_site_killed_mid_round_is_waited_for_at_most_the_round_timeout_and_rejoins(federation):
    server = federation.start_server(rounds=2)
    site_a = federation.start_site("Site A")
    site_b = federation.start_site("Site B", fault=HANG)  # its ClientApp never answers round 1
    wait_for(lambda: site_a.connected() and site_b.connected(), 60, "both sites to connect")
    server.submit()
    wait_for(lambda: "a train message" in site_b.worker.log_text(), RUN_TIMEOUT,
             "site B's worker to receive round 1")
    for process in (site_b.supernode, site_b.worker):  # the whole site goes
        kill_group(process.pid)
        process.popen.wait()
    site_b.supernode = site_b.worker = None
    site_b_again = federation.start_site("Site B")
    federation.follow([site_a, site_b_again])

    records = federation.records()
    first = {site: status for (n, phase, site), status in records.items() if (n, phase) == (1, "train")}
    # Site B either missed the round (timeout) or Flower answered for it that its node is gone.
    assert first.pop("Site A") == "accepted" and "accepted" not in first.values()
    assert records[(2, "train", "Site B")] == records[(2, "train", "Site A")] == "accepted"
    assert records[(2, "evaluate", "Site B")] == "accepted"
    assert load_checkpoint(federation.folder / "run" / "model.pt").round == 2


def test_a_server_killed_mid_round_resumes_after_its_last_checkpoint(federation):
    server = federation.start_server(rounds=2)
    # Site B holds its round 2 until released: the server cannot finish round 2 before it is killed.
    sites = [federation.start_site("Site A"), federation.start_site("Site B", fault=HOLD)]
    wait_for(lambda: all(site.connected() for site in sites), 60, "both sites to connect")
    server.submit()
    model = federation.folder / "run" / "model.pt"
    site_events = federation.folder / "Site A" / "events.jsonl"
    rounds_read: list[int] = []

    def training_round_2() -> bool:
        if model.exists():
            rounds_read.append(load_checkpoint(model).round)  # never half-written: always loads
        return site_events.exists() and any(
            event["kind"] == "started" and event["round"] == 2 for event in read_events(site_events))

    wait_for(training_round_2, RUN_TIMEOUT, "round 2 to start at the sites")
    kill_group(server.superlink.pid)
    server.superlink.popen.wait()
    server.superlink = None
    try:
        wait_for(lambda: not server_apps_of(federation.folder), 60, "the killed server's ServerApp to end")
    except AssertionError as error:
        raise AssertionError(f"{error}: {describe_processes(server_apps_of(federation.folder))}") from None
    assert load_checkpoint(model).round == 1 and set(rounds_read) == {1}
    federation.release.touch()  # site B trains round 2 for the dead run, then is free again

    resumed = federation.processes.enter_context(FederationServer(server.config))
    resumed.start()
    resumed.submit(resume=True)
    federation.follow(sites)

    sessions = [event.get("round") for event in federation.events() if event["kind"] == "started"]
    assert sessions == [0, 1]  # the resumed session starts after round 1, and trains round 2
    records = federation.records()
    expected = {(n, "train", s) for n in (1, 2) for s in SITES} | {(2, "evaluate", s) for s in SITES}
    assert set(records) == expected and set(records.values()) == {"accepted"}
    assert len(read_metrics(federation.folder / "run" / METRICS_NAME)) == len(expected)  # round 1 once
    assert load_checkpoint(model).round == 2


class InProcessGrid:
    """Delivers messages to an in-process ClientApp, as a SuperNode would: the honest-only reference."""

    def __init__(self, contexts: dict[int, Context]) -> None:
        self.contexts = contexts

    def get_node_ids(self) -> list[int]:
        return list(self.contexts)

    def send_and_receive(self, messages: list[Message], timeout: float) -> list[Message]:
        return [client_app.app(message, self.contexts[message.metadata.dst_node_id]) for message in messages]


def honest_only_model(folder: Path, server_toml: Path, data: Path, monkeypatch) -> dict[str, np.ndarray]:
    """The global model of the same federation with the honest site alone (in-process)."""
    for attribute, value in (("_run_id", 1), ("_node_id", 0), ("_task_id", 1)):
        monkeypatch.setattr(TaskIdentity, attribute, value)
    folder.mkdir()
    reference = folder / "server.toml"
    reference.write_text(server_toml.read_text().replace("min_sites = 2", "min_sites = 1"))
    settings = SiteSettings("Site A", "ct", data, folder / "events.jsonl")
    context = Context(run_id=1, node_id=1, node_config=settings.to_node_config(), state=RecordDict(),
                      run_config={})
    run_server(InProcessGrid({1: context}), load_server_config(reference), resume=False)
    return weights(folder / "run" / "model.pt")


def weights(path: Path) -> dict[str, np.ndarray]:
    return {name: tensor.numpy() for name, tensor in load_checkpoint(path).state_dict.items()}


def test_a_poisoned_site_is_dropped_every_round_and_the_model_stays_the_honest_one(federation, monkeypatch):
    server = federation.start_server(rounds=3)
    sites = [federation.start_site("Site A"), federation.start_site("Site B", fault=POISON)]
    wait_for(lambda: all(site.connected() for site in sites), 60, "both sites to connect")
    server.submit()
    federation.follow(sites)

    records = federation.records()
    assert [records[(n, "train", "Site B")] for n in (1, 2, 3)] == list(POISONS)
    assert [records[(n, "train", "Site A")] for n in (1, 2, 3)] == ["accepted"] * 3
    assert records[(3, "evaluate", "Site B")] == "accepted"  # it evaluates honestly
    model = federation.folder / "run" / "model.pt"
    assert load_checkpoint(model).round == 3
    final = weights(model)
    assert all(np.isfinite(array).all() for array in final.values())
    reference = honest_only_model(federation.folder / "honest", federation.folder / "server.toml",
                                  federation.data["Site A"], monkeypatch)
    for name, array in reference.items():
        np.testing.assert_allclose(final[name], array, rtol=1e-3, atol=1e-4, err_msg=name)


def test_a_site_that_joins_after_round_2_takes_part_from_then_on(federation):
    rounds = 8  # enough rounds left for the late site's start-up (its worker loads PyTorch first)
    server = federation.start_server(rounds=rounds, min_sites=1)
    early = federation.start_site("Site A")
    wait_for(early.connected, 60, "site A to connect")
    server.submit()
    tail, seen = EventTail(federation.folder / "run" / EVENTS_NAME, from_start=True), []

    def checkpointed(number: int) -> bool:
        early.supervise()
        seen.extend(tail)
        return any(event["kind"] == "checkpoint" and event["round"] >= number for event in seen)

    wait_for(lambda: checkpointed(2), RUN_TIMEOUT, "round 2's checkpoint")
    late = federation.start_site("Site B")
    federation.follow([early, late])
    records = federation.records()
    late_rounds = sorted(n for (n, phase, site) in records if site == "Site B" and phase == "train")
    assert late_rounds and late_rounds[0] > 2  # it was not there for rounds 1 and 2
    assert late_rounds == list(range(late_rounds[0], rounds + 1))  # and from its first round on, every one
    assert all(status == "accepted" for (n, _, site), status in records.items() if site == "Site B")
    assert records[(rounds, "evaluate", "Site B")] == "accepted"
    assert all(records[(n, "train", "Site A")] == "accepted" for n in range(1, rounds + 1))


def test_a_run_with_node_authentication_trains_every_registered_site(federation):
    keys = {name: generate_node_keys(federation.folder / "keys", name.replace(" ", "-")) for name in SITES}
    admitted = ", ".join(f'"{pair.public_key}"' for pair in keys.values())
    server = federation.start_server(rounds=1, auth=f"[auth]\nsite_public_keys = [{admitted}]\n")
    assert server.tls is not None and server.settings.supernode_auth
    sites = [federation.start_site(name, key=keys[name].private_key) for name in SITES]
    wait_for(lambda: all(site.connected() for site in sites), 60, "both authenticated sites to connect")
    server.submit()
    federation.follow(sites)
    records = federation.records()
    assert {(phase, site): status for (_, phase, site), status in records.items()} == {
        (phase, site): "accepted" for phase in ("train", "evaluate") for site in SITES}
    assert load_checkpoint(federation.folder / "run" / "model.pt").round == 1


def test_a_site_with_an_unregistered_key_is_refused(federation):
    keys = {name: generate_node_keys(federation.folder / "keys", name.replace(" ", "-")) for name in SITES}
    admits = f'[auth]\nsite_public_keys = ["{keys["Site A"].public_key}"]\n'
    server = federation.start_server(rounds=1, auth=admits)
    assert server.tls is not None and server.settings.supernode_auth
    admitted = federation.start_site("Site A", key=keys["Site A"].private_key)
    refused = federation.start_site("Site B", key=keys["Site B"].private_key)
    wait_for(lambda: admitted.connected() and not refused.supernode.alive(), 60,
             "site A to connect and site B to be turned away")
    with pytest.raises(FlowerProcessError, match="could not join .* public key in the server's"):
        refused.supervise()
    assert not refused.connected()
    admitted.supervise()  # still in
    assert admitted.supernode.alive()

