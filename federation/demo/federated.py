"""The demo's federated run: a real SuperLink and one SuperNode per site on 127.0.0.1, with TLS.

The demo writes a server.toml and a site.toml per site (the same files an operator and the sites
would write), starts them with the classes `fedseg server` and `fedseg site` use, submits the run once
every site is connected and follows the server's events until the run finishes. Every process it
started is stopped on the way out, whatever happens.

With settings.he the server.toml and site.toml files get [he] tables: the server the public context, the
sites the secret one, both made once into the demo folder. The server then keeps only the encrypted
model.he, and the sites keep the decrypted final model, which is where the demo reads it from.

With join_site the demo leaves that modality's site to a SuperNode started outside it (the workbench's
Federation page, or `fedseg site --config` in another terminal): it writes that site's site.toml as usual,
names it in JOIN_ANNOUNCEMENT (a JSON file next to it) and submits the run once the SuperLink counts every
site online.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable, Iterable, Mapping
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import tomli_w

from federation.config import ServerConfig, load_server_config, load_site_config
from federation.demo.settings import DemoSettings
from federation.he.context import (
    PUBLIC_CONTEXT_NAME,
    SECRET_CONTEXT_NAME,
    HeContextError,
    HeKeyFiles,
    load_public_context,
    load_secret_context,
    write_he_keys,
)
from federation.he.masking_settings import MIN_MASK_SITES
from federation.launch import FINISHED, EventTail, FederationServer, FederationSite
from federation.processes import FlowerProcessError, free_port
from federation.validation import ACCEPTED
from segmentation.atomic import write_text_atomic
from segmentation.datalist import DatasetIndex
from segmentation.errors import CheckpointError
from segmentation.settings import CHECKPOINT_NAME, GLOBAL_MODEL_NAME, PERSONALISED_MODEL_NAME

SERVER_TOML = "server.toml"
HE_KEYS = "he"  # the demo's HE contexts, under its federation folder
JOIN_ANNOUNCEMENT = "join-site.json"  # names the site.toml of the site left to an outside SuperNode
_CONNECT_TIMEOUT = 120.0  # seconds for every SuperNode to be accepted
_JOIN_TIMEOUT = 600.0  # seconds for the outside site to join (a person starts it)
_NODE_POLL_SECONDS = 5.0  # between `flwr supernode list` calls (each costs a few CPU seconds)
_STATUS_POLL_SECONDS = 10.0

EventCallback = Callable[[dict[str, Any]], None]
WRITTEN_BY = "# Written by `fedseg demo`.\n"
StageCallback = Callable[[str], None]


def server_toml(settings: DemoSettings, labels: Mapping[int, str], port: int,
                he: HeKeyFiles | None = None) -> str:
    """The demo server: every site takes part in every round; TLS with generated certificates; with
    `he` encrypted aggregation with its public context."""
    document: dict[str, Any] = {
        "server": {"host": "127.0.0.1", "fleet_port": port, "run_dir": "run"},
        "federation": {"rounds": settings.rounds, "min_sites": len(settings.sites),
                       "round_timeout": settings.round_timeout, "local_epochs": settings.local_epochs,
                       "personalise_epochs": settings.personalise_epochs,
                       "augmentation": "gin", "augmentation_probability": settings.augmentation_probability},
        "model": {"labels": [labels[value] for value in sorted(labels)], "channels": list(settings.channels),
                  "batch_size": settings.batch_size, "learning_rate": settings.learning_rate},
        "tls": {"enabled": True},
        **({"he": he.server_table()} if he is not None else {}),
    }
    return WRITTEN_BY + tomli_w.dumps(document)


def site_event_file(folder: Path, name: str) -> Path:
    """Where the demo's site `name` writes its events (its SuperNode's files go next to it)."""
    return folder / "sites" / name.lower().replace(" ", "-") / "events.jsonl"


def site_model_file(folder: Path, name: str, model: str = GLOBAL_MODEL_NAME) -> Path:
    """Where the demo's site `name` keeps the latest global model it received (decrypted, with HE), or
    with PERSONALISED_MODEL_NAME its personalised model."""
    return site_event_file(folder, name).parent / model


def site_toml(name: str, dataset: DatasetIndex, server_port: int, ca_certificate: Path,
              he: HeKeyFiles | None = None, dp: bool = False, sites: int = MIN_MASK_SITES) -> str:
    """A demo site's site.toml; with `he` it masks with all `sites` of the demo (at least 2, at most the
    default 3 a real site asks for)."""
    document: dict[str, Any] = {
        "site": {"name": name, "modality": dataset.modality, "data_dir": str(dataset.root),
                 "event_file": str(site_event_file(Path(), name))},
        "server": {"address": f"127.0.0.1:{server_port}", "clientappio_port": free_port()},
        "tls": {"ca_certificate": str(ca_certificate)},
        **({"he": {**he.site_table(), "min_mask_sites": max(2, min(MIN_MASK_SITES, sites))}}
           if he is not None else {}),
        **({"privacy": {"dp": True}} if dp else {}),
    }
    return WRITTEN_BY + tomli_w.dumps(document)


def demo_he_keys(folder: Path) -> HeKeyFiles:
    """The demo's HE contexts in folder/he: made on its first run with HE, reused by later ones (a pair
    that is incomplete, unreadable or of two keys is made again)."""
    keys = (folder / HE_KEYS).resolve()
    secret, public = keys / SECRET_CONTEXT_NAME, keys / PUBLIC_CONTEXT_NAME
    try:
        fingerprint = load_secret_context(secret).fingerprint
        if load_public_context(public).fingerprint == fingerprint:
            return HeKeyFiles(secret, public, fingerprint)
    except HeContextError:
        pass
    secret.unlink(missing_ok=True)
    public.unlink(missing_ok=True)
    return write_he_keys(keys)


def write_server_config(folder: Path, settings: DemoSettings, labels: Mapping[int, str],
                        he: HeKeyFiles | None = None) -> ServerConfig:
    """A fresh server.toml and an empty run folder (a previous demo's run is replaced)."""
    folder.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(folder / "run", ignore_errors=True)
    path = folder / SERVER_TOML
    path.write_text(server_toml(settings, labels, free_port(), he), encoding="utf-8")
    return load_server_config(path)


def final_model_file(folder: Path, config: ServerConfig, sites: Iterable[str]) -> Path:
    """The run's final global model in plaintext: the server's model.pt, or with HE (the server holds it
    encrypted) the first of the sites' decrypted copies, which are all the same model."""
    if not config.he.enabled:
        return config.run_dir / CHECKPOINT_NAME
    kept = [path for path in (site_model_file(folder, site) for site in sites) if path.is_file()]
    if not kept:
        raise CheckpointError(f"no demo site kept the decrypted global model (logs: the supernode folders "
                              f"under {folder / 'sites'})")
    return kept[0]


def site_thread_environment(sites: int) -> dict[str, str]:
    """Share the CPU cores among the sites' ClientApps instead of oversubscribing them."""
    threads = max(1, (os.cpu_count() or 1) // sites)
    return {"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}


def announce_joining_site(folder: Path, site_config: Path, name: str, modality: str) -> Path:
    """Write folder/JOIN_ANNOUNCEMENT: the outside site's name, modality and site.toml (absolute path)."""
    announcement = {"site": name, "modality": modality, "site_toml": str(site_config.resolve())}
    return write_text_atomic(folder / JOIN_ANNOUNCEMENT, json.dumps(announcement) + "\n")


def announced_site_config(folder: Path) -> Path | None:
    """The site.toml a running demo in `folder` left to an outside SuperNode, once it is announced."""
    try:
        announcement = json.loads((folder / JOIN_ANNOUNCEMENT).read_text(encoding="utf-8"))
        return Path(announcement["site_toml"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def run_federation(
    folder: Path,
    settings: DemoSettings,
    datasets: Mapping[str, DatasetIndex],
    on_event: EventCallback = lambda event: None,
    join_site: str | None = None,
    on_stage: StageCallback = lambda stage: None,
) -> ServerConfig:
    """Run the federation to its end; the server's config (its run folder holds the metrics; the final
    model: final_model_file).

    on_event gets every server event as it is read. join_site (a modality) is the site the demo does not
    start: its site.toml is announced (JOIN_ANNOUNCEMENT, and a line through on_stage) and the run waits
    for it. An exception (Ctrl-C included) stops every process.
    """
    (folder / JOIN_ANNOUNCEMENT).unlink(missing_ok=True)  # a previous demo's site is not this one's
    labels = next(iter(datasets.values())).labels
    he = demo_he_keys(folder) if settings.he else None
    config = write_server_config(folder, settings, labels, he)
    environment = site_thread_environment(len(datasets))
    with ExitStack() as processes:
        server = processes.enter_context(FederationServer(config))
        server.start()
        assert server.tls is not None  # the demo's server.toml enables TLS
        sites, outside = [], None
        for name, dataset in datasets.items():
            path = folder / f"{dataset.modality}-site.toml"
            ca_certificate = server.tls.ca_certificate
            path.write_text(site_toml(name, dataset, config.fleet_port, ca_certificate, he, settings.dp,
                                      len(datasets)), "utf-8")
            for model in (GLOBAL_MODEL_NAME, PERSONALISED_MODEL_NAME):  # a previous run's are not this one's
                site_model_file(folder, name, model).unlink(missing_ok=True)
            if dataset.modality == join_site:
                outside = (name, path)
                continue
            site = processes.enter_context(FederationSite(load_site_config(path), environment))
            site.start()
            sites.append(site)
        _wait_until_connected(sites)
        if outside is not None:
            name, path = outside
            announce_joining_site(folder, path, name, join_site)
            on_stage(f"waiting up to {_JOIN_TIMEOUT / 60:.0f} min for {name} to join: start it with "
                     f"`fedseg site --config {path.resolve()}` (or Start demo on the workbench's "
                     "Federation page)")
            _wait_until_joined(server, sites, len(datasets), f"{name} ({path.resolve()})")
        tail = EventTail(server.events_path, from_start=True)
        server.submit()
        _follow(server, sites, tail, on_event)
    return config


def _wait_until_connected(sites: list[FederationSite]) -> None:
    """Submit only when every site is in, so the first round does not time the sites' start-up."""
    def late() -> str:
        missing = [site for site in sites if not site.connected()]
        return (f"site(s) {', '.join(site.config.name for site in missing)} did not connect within "
                f"{_CONNECT_TIMEOUT:.0f} s (log: {missing[0].settings.state_dir / 'supernode.log'})")

    _wait_until(lambda: all(site.connected() for site in sites), lambda: _supervise(sites),
                _CONNECT_TIMEOUT, 0.5, late)


def _wait_until_joined(server: FederationServer, sites: list[FederationSite], expected: int,
                       outside: str) -> None:
    """Wait until the SuperLink counts `expected` SuperNodes online: the demo's own and the outside one."""
    def supervise() -> None:
        server.check_alive()
        _supervise(sites)

    _wait_until(lambda: server.cli.online_nodes() >= expected, supervise, _JOIN_TIMEOUT, _NODE_POLL_SECONDS,
                lambda: f"the site {outside} did not join within {_JOIN_TIMEOUT:.0f} s; start its SuperNode "
                        "with `fedseg site --config` and that file")


def _wait_until(ready: Callable[[], bool], supervise: Callable[[], None], timeout: float, poll: float,
                failure: Callable[[], str]) -> None:
    """Poll `ready` every `poll` seconds, supervising the processes in between; FlowerProcessError with
    failure() after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not ready():
        supervise()
        if time.monotonic() > deadline:
            raise FlowerProcessError(failure())
        time.sleep(poll)


def _supervise(sites: list[FederationSite]) -> None:
    for site in sites:
        site.supervise()


def _follow(server: FederationServer, sites: list[FederationSite], tail: EventTail,
            on_event: EventCallback) -> None:
    """Pass the server's events on until "finished"; a failed run, a round without any accepted reply or
    a dead process raises."""
    next_check, ended, accepted = time.monotonic() + _STATUS_POLL_SECONDS, "", set()
    while True:
        for event in tail:
            on_event(event)
            if event["kind"] == "site-metrics" and event["status"] == ACCEPTED:
                accepted.add(event["round"])
            if event["kind"] == "checkpoint" and event["round"] not in accepted:
                raise FlowerProcessError(
                    f"round {event['round']}: no site's reply was accepted within the round timeout "
                    f"(logs: {server.state_dir} and the sites' supernode folders)")
            if event["kind"] == "finished":
                return
            if event["kind"] == "error":
                raise FlowerProcessError(f"the demo run failed: {event.get('message', 'see the logs')} "
                                         f"(logs: {server.state_dir})")
        if ended:  # Flower says the run is over, and its last events are read: it never finished
            raise FlowerProcessError(f"the demo run ended as {ended} (logs: {server.state_dir})")
        server.check_alive()
        _supervise(sites)
        if time.monotonic() >= next_check:
            next_check = time.monotonic() + _STATUS_POLL_SECONDS
            status = server.status()
            ended = status if status.startswith(FINISHED) else ""
        time.sleep(0.5)
