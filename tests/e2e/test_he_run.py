"""A real federation with homomorphic encryption on 127.0.0.1: `fedseg keys he`, then `fedseg server` and
three `fedseg site` processes train one round on tiny demo data, their updates masked pairwise.

What must hold: every process shows the same HE key fingerprint; all sites' masked, encrypted updates
are accepted; the server keeps only the encrypted model.he (no model.pt) and the secret key never reaches
its run folder, while the sites decrypt the same global model into their global-model.pt; all follow the
plan the server made from the sites' fingerprints.
"""

import json
import re
import signal
from pathlib import Path

import numpy as np
import pytest
from test_federation_run import RUN_TIMEOUT, write_site
from tiny_federation import server_toml, site_datasets, wait_for

from federation.config import load_server_config
from federation.he.aggregation import decrypt_average
from federation.he.checkpoint import load_encrypted_checkpoint
from federation.he.context import load_secret_context, seal_bytes
from federation.he.packing import Layout
from federation.he.records import from_arrays
from federation.processes import free_port
from segmentation.checkpoint import load_checkpoint
from segmentation.plan import read_plan

pytestmark = pytest.mark.slow


def secret_key_bytes(secret_context: Path) -> bytes:
    """The raw secret key as SEAL saves it (what must never appear on the server's side)."""
    return seal_bytes(load_secret_context(secret_context).secret_key)


def test_two_sites_train_an_encrypted_round_through_real_flower_processes(tmp_path, launched):
    keys = launched("keys", "keys", "he", "--out", "he")
    assert keys.wait(60) == 0
    keys_output = (tmp_path / "keys.out").read_text(encoding="utf-8")
    fingerprint = re.search(r"fingerprint:\s+(\S+)", keys_output).group(1)

    folders = site_datasets(tmp_path / "data", ("Hospital A", "Hospital B", "Hospital C"), cases=2,
                            test_fraction=0.5)
    port = free_port()
    he = '[he]\nenabled = true\npublic_context = "he/public.ctx"\n'
    (tmp_path / "server.toml").write_text(server_toml(port, rounds=1, round_timeout=120, extra=he))
    server = launched("server", "server", "--config", "server.toml")
    wait_for(lambda: (tmp_path / "run" / "tls" / "ca.crt").exists() or server.poll() is not None, 60,
             "the server's certificates")
    sites = []
    for name, folder in folders.items():
        path = write_site(tmp_path, name, folder, port,
                          extra='[he]\nenabled = true\nsecret_context = "he/secret.ctx"\n')
        sites.append(launched(name, "site", "--config", str(path)))

    assert server.wait(RUN_TIMEOUT) == 0, (tmp_path / "server.out").read_text(encoding="utf-8")
    output = (tmp_path / "server.out").read_text(encoding="utf-8")
    assert f"HE key {fingerprint}" in output and "encrypted global model" in output
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert {(r["phase"], r["site"], r["status"]) for r in records} == {
        (phase, site, "accepted") for phase in ("train", "evaluate") for site in folders}

    run_dir = tmp_path / "run"
    assert not (run_dir / "model.pt").exists()
    secret = secret_key_bytes(tmp_path / "he" / "secret.ctx")
    assert not any(secret in path.read_bytes() for path in run_dir.rglob("*") if path.is_file())

    for site in sites:
        site.send_signal(signal.SIGTERM)
    assert [site.wait(60) for site in sites] == [0, 0, 0]
    outputs = [(tmp_path / f"{name}.out").read_text(encoding="utf-8") for name in folders]
    assert all(f"HE key {fingerprint}" in output for output in outputs)
    assert all("updates masked pairwise with at least 3 sites" in output for output in outputs)

    stored = load_encrypted_checkpoint(run_dir / "model.he")
    site_model = load_checkpoint(tmp_path / "Hospital B" / "global-model.pt")
    names = list(site_model.state_dict)
    layout = Layout.of({name: site_model.state_dict[name].numpy() for name in names})
    decrypted = layout.unflatten(decrypt_average(load_secret_context(tmp_path / "he" / "secret.ctx"),
                                                 from_arrays(stored.arrays), layout.size))
    assert stored.round == site_model.round == 1
    assert stored.plan == site_model.plan == read_plan(run_dir / "plan.json")  # the sites' merged plan
    assert max(float(np.max(np.abs(decrypted[n] - site_model.state_dict[n].numpy()))) for n in names) <= 1e-6
    assert load_server_config(tmp_path / "server.toml").he.fingerprint == fingerprint
