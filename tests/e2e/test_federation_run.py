"""A real federation on 127.0.0.1: `fedseg server` (SuperLink with generated TLS certificates, ServerApp)
and two `fedseg site` processes (SuperNodes, site workers running the ClientApp) train two rounds on tiny
demo data.

What must hold: the server exits 0 after the run; before round 1 both sites' fingerprints reach the
server, which writes the plan to plan.json; metrics.jsonl has both sites for every round and the final
evaluation; model.pt holds round 2 and the plan; every site's messages ran in its site worker; stock
`flwr ls` and `flwr log`, run as the server's output says, list the run and show its log; each site
leaves cleanly on SIGTERM; and no process the test started (directly or through Flower) is left behind.
"""

import json
import os
import re
import signal
import subprocess
from pathlib import Path

import pytest
from tiny_federation import flower_family, live_commands, server_toml, site_datasets, site_toml, wait_for

from federation.processes import flower_command, free_port
from segmentation.checkpoint import load_checkpoint
from segmentation.events import read_events
from segmentation.plan import read_plan

pytestmark = pytest.mark.slow

RUN_TIMEOUT = 300  # seconds; the run takes about a minute and a half on two loaded CPU cores


def write_site(tmp_path: Path, name: str, data: Path, port: int, extra: str = "") -> Path:
    path = tmp_path / f"{name}.toml"
    path.write_text(site_toml(name, data, port, "run/tls/ca.crt", extra))
    return path


def test_two_sites_train_two_rounds_through_real_flower_processes(tmp_path, launched):
    folders = site_datasets(tmp_path / "data", ("Hospital A", "Hospital B"), cases=3, test_fraction=0.34)
    port = free_port()
    (tmp_path / "server.toml").write_text(server_toml(port, rounds=2, round_timeout=120))
    server = launched("server", "server", "--config", "server.toml")
    wait_for(lambda: (tmp_path / "run" / "tls" / "ca.crt").exists() or server.poll() is not None, 60,
             "the server's certificates")
    sites = [launched(name, "site", "--config", str(write_site(tmp_path, name, folder, port)))
             for name, folder in folders.items()]

    # Stock `flwr ls` and `flwr log`, as the server's output tells an operator to run them, see the run.
    hint = re.compile(r"run (\d+) submitted.*\nFlower's own CLI: FLWR_HOME=(\S+) flwr ls (\S+)")
    wait_for(lambda: hint.search((tmp_path / "server.out").read_text(encoding="utf-8")) is not None, 60,
             "the server to submit its run")
    run_id, home, connection = hint.search((tmp_path / "server.out").read_text(encoding="utf-8")).groups()
    environment = {**os.environ, "FLWR_HOME": home}
    listed = subprocess.run([flower_command("flwr"), "ls", connection, "--format", "json"], env=environment,
                            capture_output=True, text=True, timeout=60)
    assert listed.returncode == 0 and run_id in listed.stdout, listed.stderr
    log = subprocess.run([flower_command("flwr"), "log", run_id, connection, "--show"], env=environment,
                         capture_output=True, text=True, timeout=60)
    assert log.returncode == 0 and "flwr-serverapp" in log.stdout, log.stderr

    assert server.wait(RUN_TIMEOUT) == 0, (tmp_path / "server.out").read_text(encoding="utf-8")
    output = (tmp_path / "server.out").read_text(encoding="utf-8")
    assert "run finished" in output and "Hospital A" in output

    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    accepted = {(r["round"], r["phase"], r["site"]) for r in records if r["status"] == "accepted"}
    expected = {(n, "train", s) for n in (1, 2) for s in folders} | {(2, "evaluate", s) for s in folders}
    assert accepted == expected
    assert all("before/dice" in r["metrics"] and "after/dice" in r["metrics"]
               for r in records if r["phase"] == "train")
    checkpoint = load_checkpoint(tmp_path / "run" / "model.pt")
    assert checkpoint.round == 2 and checkpoint.plan == read_plan(tmp_path / "run" / "plan.json")
    plan = next(event for event in read_events(tmp_path / "run" / "events.jsonl") if event["kind"] == "plan")
    assert {(s["site"], s["status"]) for s in plan["sites"]} == {(s, "accepted") for s in folders}

    site_log = (tmp_path / "Hospital A" / "events.jsonl").read_text()
    site_events = [json.loads(line) for line in site_log.splitlines()]
    assert {e["round"] for e in site_events if e["kind"] == "finished"} == {1, 2}
    assert {(e["round"], e["site"]) for e in site_events if e["kind"] == "site-metrics"} >= {
        (1, "Hospital A"), (1, "Hospital B"), (2, "Hospital B")}

    # Every message ran in the site's worker: no flwr-clientapp process, no SuperExec.
    for name in folders:
        state = tmp_path / name / "supernode"
        worker_log = (state / "site-worker.log").read_text(encoding="utf-8")
        assert [worker_log.count(f"a {kind} message") for kind in ("query", "train", "evaluate")] == [1, 2, 1]
        assert "flwr-clientapp" not in (state / "supernode.log").read_text(encoding="utf-8")
    started = flower_family(tmp_path)
    assert len(started) >= 6  # two fedseg site commands, their SuperNodes and their site workers
    for site in sites:
        site.send_signal(signal.SIGTERM)
    assert [site.wait(60) for site in sites] == [0, 0]
    wait_for(lambda: not started & set(live_commands()), 60, "every Flower process to end")
