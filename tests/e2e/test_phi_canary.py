"""Proof that no patient data leaves a site: canary strings in everything a site holds, a real federation
of two rounds on 127.0.0.1 (SuperLink, SuperNodes, site workers), and none of the canaries afterwards in
anything the server keeps or in the traffic between the sites and the server.

- "Canary Site" trains and evaluates. Its dataset folder and name, its DICOM series folders and its label
  file names are canaries, and its CT images are DICOM series whose PatientName, PatientID and
  SeriesDescription are canaries.
- "Broken Site": its dataset folder is a canary, and one training case is a truncated file whose name is a
  canary. Reading it fails (a site skips no case), so the site answers the fingerprint query and both
  training rounds with an error code, and the run goes on without it; the site's own event file names
  the file, which shows that the error text held the canary.

Searched afterwards, as bytes, for each canary as written, in upper case and in lower case: every file of
the server's run folder (the SuperLink's SQLite database with its WAL and log, events.jsonl, metrics.jsonl
and .csv, plan.json, model.pt) and the captured traffic. The traffic is a real capture: this run has TLS
off and the SuperNodes reach the SuperLink through a TCP relay in the test that keeps every byte both
ways. Flower 1.42's Fleet API is HTTP/1.1 with protobuf bodies; the bytes are searched as they are and as
the bodies cut out by their Content-Length. The test checks that no body is compressed or chunked, and
that the bodies name the Canary Site both ways (its replies, the server's shared history) and so does the
database, so the search does see the messages in plain text. With TLS on, the same messages cross
encrypted.
"""

from __future__ import annotations

import json
import os
import select
import signal
import socket
import threading
from contextlib import ExitStack
from pathlib import Path

import pydicom
import pytest
from tiny_federation import flower_family, follow_server, server_toml, site_toml, wait_for

from federation.config import load_server_config, load_site_config
from federation.launch import FederationServer, FederationSite
from federation.processes import free_port
from federation.server_run import EVENTS_NAME, METRICS_NAME, read_metrics
from federation.site_errors import SiteErrorCode
from segmentation.case_cache import CACHE_DIR_ENVIRONMENT
from segmentation.datalist import write_dataset_json
from segmentation.events import read_events
from segmentation.io import write_volume
from segmentation.io.dicom_writer import derived_uid, write_dicom_series
from segmentation.synth import LABELS, generate_dataset, phantom_case, phantom_depth

pytestmark = pytest.mark.slow

RUN_TIMEOUT = 300  # seconds for the whole run on two loaded CPU cores
CANARY_SITE, BROKEN_SITE = "Canary Site", "Broken Site"
# One string per place patient data may hide; mixed case, so a changed case is a different search.
CANARIES = {place: f"Kanarie{place}Q7x3" for place in (
    "DatasetFolder", "DatasetName", "SeriesFolder", "LabelFile", "PatientName", "PatientId",
    "SeriesDescription", "BrokenFolder", "CorruptCase",
)}


def canary_site(folder: Path) -> Path:
    """Three phantom CT cases (two to train on, one to test on) as DICOM series, all under canary names."""
    pairs = []
    for index in range(3):
        image, label = phantom_case(seed=5, index=index, modality="ct", size=16, depth=phantom_depth(16, 3))
        split = "Tr" if index < 2 else "Ts"
        series = f"images{split}/{CANARIES['SeriesFolder']}{index}"
        label_file = f"labels{split}/{CANARIES['LabelFile']}{index}.nii.gz"
        write_dicom_series(
            image, folder / series, series_description=CANARIES["SeriesDescription"],
            patient_id=CANARIES["PatientId"], patient_name=CANARIES["PatientName"],
            study_uid=derived_uid("canary study", index), series_uid=derived_uid("canary series", index),
            frame_of_reference_uid=derived_uid("canary frame", index),
        )
        write_volume(label, folder / label_file)
        pairs.append((series, label_file))
    write_dataset_json(folder, name=CANARIES["DatasetName"], modality="ct", labels=dict(LABELS),
                       training=pairs[:2], test=pairs[2:])
    return folder


def broken_site(folder: Path) -> Path:
    """Three phantom CT cases plus a fourth training case whose image, named by a canary, is cut in half."""
    generate_dataset(folder, "ct", 3, seed=6, size=16, test_fraction=0.34)
    index = json.loads((folder / "dataset.json").read_text(encoding="utf-8"))
    whole = index["training"][0]
    corrupt = f"imagesTr/{CANARIES['CorruptCase']}.nii.gz"
    data = (folder / whole["image"]).read_bytes()
    (folder / corrupt).write_bytes(data[: len(data) // 2])
    index["training"].append({"image": corrupt, "label": whole["label"]})
    index["numTraining"] = len(index["training"])
    (folder / "dataset.json").write_text(json.dumps(index), encoding="utf-8")
    return folder


class RecordingRelay:
    """A TCP relay from a port on 127.0.0.1 to the SuperLink's Fleet API that keeps every byte it passes:
    per connection, what the site sent and what the server sent."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.to_server: list[bytearray] = []
        self.to_sites: list[bytearray] = []
        self._stop = threading.Event()
        self._sockets: list[socket.socket] = []
        self._threads = [threading.Thread(target=self._accept, daemon=True)]
        self._threads[0].start()

    def _accept(self) -> None:
        while _readable(self.listener, self._stop):
            site, _ = self.listener.accept()
            try:
                server = socket.create_connection(("127.0.0.1", self.upstream_port))
            except OSError:  # the SuperLink is not listening yet; the SuperNode tries again
                site.close()
                continue
            self._sockets += [site, server]
            for source, target, kept in ((site, server, self.to_server), (server, site, self.to_sites)):
                kept.append(bytearray())
                thread = threading.Thread(target=self._relay, args=(source, target, kept[-1]), daemon=True)
                self._threads.append(thread)
                thread.start()

    def _relay(self, source: socket.socket, target: socket.socket, captured: bytearray) -> None:
        try:
            while _readable(source, self._stop):
                data = source.recv(1 << 16)
                if not data:
                    target.shutdown(socket.SHUT_WR)
                    return
                captured += data
                target.sendall(data)
        except OSError:
            return  # one side went away; the other side's relay sees it too

    def __enter__(self) -> RecordingRelay:
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(5)
        for open_socket in (self.listener, *self._sockets):
            open_socket.close()


def _readable(source: socket.socket, stop: threading.Event) -> bool:
    """Wait until the socket has something to read; False once `stop` is set."""
    while not stop.is_set():
        if select.select([source], [], [], 0.2)[0]:
            return True
    return False


def http_bodies(captured: bytes) -> list[bytes]:
    """The bodies of the HTTP/1.1 requests (or responses) in one direction of a connection, cut by their
    Content-Length. Each must be sent as it is (no Content-Encoding or Transfer-Encoding), else the search
    could miss a string; a connection cut mid-message leaves its tail out (its raw bytes are searched)."""
    bodies, at = [], 0
    while (end := captured.find(b"\r\n\r\n", at)) >= 0:
        start_line, *lines = captured[at:end].decode("latin-1").split("\r\n")
        assert start_line.startswith("HTTP/1.1 ") or start_line.endswith(" HTTP/1.1"), start_line
        headers = {name.strip().lower(): value.strip()
                   for name, _, value in (line.partition(":") for line in lines)}
        assert not {"content-encoding", "transfer-encoding"} & set(headers), headers
        size = int(headers.get("content-length", 0))
        bodies.append(captured[end + 4:end + 4 + size])
        at = end + 4 + size
    return bodies


def leaks(blobs: dict[str, bytes]) -> list[tuple[str, str]]:
    """(canary, where) for every canary found, as written, in upper or in lower case."""
    return [(canary, where) for canary in CANARIES.values()
            for variant in {canary, canary.upper(), canary.lower()}
            for where, blob in blobs.items() if variant.encode() in blob]


def test_no_canary_from_a_sites_data_reaches_the_server_or_the_wire(tmp_path):
    data = {CANARY_SITE: canary_site(tmp_path / "data" / CANARIES["DatasetFolder"]),
            BROKEN_SITE: broken_site(tmp_path / "data" / CANARIES["BrokenFolder"])}
    written = pydicom.dcmread(next((data[CANARY_SITE] / "imagesTr").glob("*/*")), stop_before_pixels=True)
    assert (str(written.PatientName), written.PatientID, written.SeriesDescription) == (
        CANARIES["PatientName"], CANARIES["PatientId"], CANARIES["SeriesDescription"])
    port = free_port()
    (tmp_path / "server.toml").write_text(server_toml(port, rounds=2, round_timeout=120,
                                                      extra="[tls]\nenabled = false\n"))
    try:
        with ExitStack() as processes:
            relay = processes.enter_context(RecordingRelay(port))  # exits last: after every process
            server = processes.enter_context(FederationServer(load_server_config(tmp_path / "server.toml")))
            server.start()
            sites = []
            for name, folder in data.items():
                (tmp_path / f"{name}.toml").write_text(site_toml(name, folder, relay.port, None))
                site = processes.enter_context(FederationSite(
                    load_site_config(tmp_path / f"{name}.toml"),
                    {CACHE_DIR_ENVIRONMENT: str(tmp_path / "cache")}, restart_delay=1))
                site.start()
                sites.append(site)
            wait_for(lambda: all(site.connected() for site in sites), 120, "both sites to connect")
            server.submit()
            follow_server(tmp_path / "run" / EVENTS_NAME, sites, RUN_TIMEOUT)
    finally:
        for pid in flower_family(tmp_path):
            os.kill(pid, signal.SIGKILL)

    # The run went on without the broken site, which answered with an error code only.
    records = read_metrics(tmp_path / "run" / METRICS_NAME)
    canary = {(r.round, r.phase): r.status for r in records if r.site == CANARY_SITE}
    assert canary == {(1, "train"): "accepted", (2, "train"): "accepted", (2, "evaluate"): "accepted"}
    assert [(r.round, r.status) for r in records if r.site != CANARY_SITE and r.phase == "train"] == [
        (1, "site-error"), (2, "site-error")]
    plan = next(event for event in read_events(tmp_path / "run" / EVENTS_NAME) if event["kind"] == "plan")
    assert sorted(site["status"] for site in plan["sites"]) == ["accepted", "site-error"]
    broken_events = list(read_events(tmp_path / BROKEN_SITE / "events.jsonl"))
    assert any(CANARIES["CorruptCase"] in event.get("message", "") for event in broken_events
               if event["kind"] == "error")  # the error the site kept to itself named the file

    # What the server keeps.
    server_files = [path for path in (tmp_path / "run").rglob("*") if path.is_file()]
    assert {"superlink.db", "superlink.log", "events.jsonl", "metrics.jsonl", "metrics.csv", "plan.json",
            "model.pt"} <= {path.name for path in server_files}
    blobs = {str(path.relative_to(tmp_path)): path.read_bytes() for path in server_files}

    # The SuperLink's database keeps the messages' contents (the sites' names) and the ServerApp's log,
    # where the broken site's failure is its code and the code's name.
    database = b"".join(blob for where, blob in blobs.items() if "superlink.db" in where)
    code, name = SiteErrorCode.DATA.reply
    assert CANARY_SITE.encode() in database and f"error code {code} ({name})".encode() in database

    # What crossed: each connection's bytes both ways, and the HTTP bodies (Flower's messages) in them.
    for direction, connections in (("to the server", relay.to_server), ("to a site", relay.to_sites)):
        bodies = [http_bodies(bytes(raw)) for raw in connections]
        # The sites' replies name their site; the server's round 2 shares every site's numbers by name.
        assert any(CANARY_SITE.encode() in body for found in bodies for body in found), direction
        for number, (raw, found) in enumerate(zip(connections, bodies, strict=True)):
            blobs[f"bytes {direction}, connection {number}"] = bytes(raw)
            blobs[f"bodies {direction}, connection {number}"] = b"\0".join(found)

    assert leaks(blobs) == []
