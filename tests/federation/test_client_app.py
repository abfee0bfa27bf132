"""The ClientApp on a real (tiny) site dataset, called in-process as a SuperNode's ClientApp would be.

What must hold: a train reply carries the new weights (same names, shapes, dtypes) and numbers only,
plus the site's display name; the fingerprint query is answered with numbers only (no path, no case
name); a failing site answers with an error code and nothing else; the site's event file gets the
round's events and the server's shared history, each record once; the ClientApp loads no PyTorch.
"""

import json
import os
import subprocess
import sys
from dataclasses import replace

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, MessageType, RecordDict
from flwr.common.serde import recorddict_to_proto
from site_data import LABELS, PLAN, write_disk_site

from federation import client_app
from federation.packed import is_packed, pack, unpack
from federation.site_history import SITE_NAME_KEY
from federation.task import (
    SiteErrorCode,
    SiteRoundError,
    SiteSettings,
    emit_shared_history,
    model_from_json,
    model_to_json,
    named_weights,
)
from segmentation.algorithm import SegmentationAlgorithm
from segmentation.errors import ConfigError
from segmentation.events import EventWriter, read_events
from segmentation.plan import Fingerprint
from segmentation.settings import NetworkConfig, TrainingConfig

pytestmark = pytest.mark.usefixtures("case_cache")  # conftest: each test its own case cache

TRAINING = TrainingConfig(
    plan=PLAN, network=NetworkConfig(out_channels=2, channels=(8, 16)), augmentation="none", batch_size=4,
)


@pytest.fixture(scope="module")
def global_weights() -> dict[str, np.ndarray]:
    return named_weights(SegmentationAlgorithm(TRAINING, device="cpu"))


def context(data_dir, event_file, name="CT Hospital") -> Context:
    node_config = SiteSettings(name, "ct", data_dir, event_file).to_node_config()
    return Context(run_id=1, node_id=7, node_config=node_config, state=RecordDict(), run_config={})


def instruction(message_type: str, weights, server_round: int = 1, labels=LABELS, **config) -> Message:
    """What the strategy sends: the global arrays and the round's ConfigRecord (the model with a plan of
    `labels`)."""
    training = replace(TRAINING, plan=replace(PLAN, labels=labels))
    content = RecordDict({
        "arrays": ArrayRecord({name: Array(array) for name, array in weights.items()}),
        "config": ConfigRecord({"server-round": server_round, "model": model_to_json(training),
                                "local-epochs": 1, **config}),
    })
    return Message(content, dst_node_id=7, message_type=message_type)


def fingerprint_query(asked: str = "fingerprint") -> Message:
    """What the server sends before round 1 (federation.planning)."""
    return Message(RecordDict({"config": ConfigRecord({"query": asked})}), dst_node_id=7,
                   message_type=MessageType.QUERY)


def strings_in(message: Message) -> list[str]:
    return [value for record in message.content.config_records.values() for value in record.values()
            if isinstance(value, str)]


def test_a_train_reply_has_the_new_weights_numbers_and_the_site_name_only(
    server_identity, site_dir, global_weights, tmp_path
):
    reply = client_app.app(instruction(MessageType.TRAIN, global_weights),
                           context(site_dir, tmp_path / "events.jsonl"))
    assert not reply.has_error()
    arrays = {name: array.numpy() for name, array in reply.content.array_records["arrays"].items()}
    assert list(arrays) == list(global_weights)
    assert all(arrays[k].shape == v.shape and arrays[k].dtype == v.dtype for k, v in global_weights.items())
    assert any(not np.allclose(arrays[k], v) for k, v in global_weights.items())
    metrics = dict(reply.content.metric_records["metrics"])
    assert metrics["num-examples"] == 2 * 3  # two training volumes of three slices
    assert {"train-loss", "before/dice", "before/dice/disk", "after/dice", "after/dice/disk"} <= set(metrics)
    assert all(isinstance(value, (int, float)) for value in metrics.values())
    assert isinstance(metrics["site-seconds"], float) and metrics["site-seconds"] > 0  # the site's own work
    assert 0.0 <= metrics["after/dice/disk"] <= 1.0
    assert strings_in(reply) == ["CT Hospital"]
    assert reply.content.config_records["site"][SITE_NAME_KEY] == "CT Hospital"


def test_a_fingerprint_reply_holds_numbers_only(server_identity, tmp_path):
    site_dir = write_disk_site(tmp_path / "St-Mary-Oncology-patients", training=2, test=1)
    reply = client_app.app(fingerprint_query(), context(site_dir, tmp_path / "events.jsonl"))
    assert not reply.has_error()
    wire = recorddict_to_proto(reply.content).SerializeToString()
    for private in ("St-Mary-Oncology-patients", str(tmp_path), "disk_training_00", "disk_training_01",
                    "disk_test_00", "images/", "labels/", ".nii", "disks"):
        assert private.encode() not in wire, private
    text = reply.content.config_records["fingerprint"]["fingerprint"]
    assert sorted(strings_in(reply)) == sorted([text, "CT Hospital"])
    fingerprint = Fingerprint.from_dict(json.loads(text))
    assert fingerprint.labels == LABELS and len(fingerprint.cases) == 2  # the training cases only
    assert {(case.spacing, case.size) for case in fingerprint.cases} == {((1.0, 1.0, 2.0), (16, 16, 3))}


def test_a_site_without_training_data_or_asked_something_else_answers_with_a_code(server_identity, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    reply = client_app.app(fingerprint_query(), context(empty, tmp_path / "events.jsonl"))
    assert (reply.error.code, reply.error.reason) == (SiteErrorCode.DATA, "data")
    site_dir = write_disk_site(tmp_path / "site")
    reply = client_app.app(fingerprint_query("patient-list"), context(site_dir, tmp_path / "events.jsonl"))
    assert (reply.error.code, reply.error.reason) == (SiteErrorCode.UNKNOWN_QUERY, "unknown_query")


def test_the_clientapp_loads_neither_pytorch_nor_monai():
    check = ("import sys, federation.client_app; "
             "loaded = [m for m in ('torch', 'monai') if m in sys.modules]; "
             "assert not loaded, f'the ClientApp imported {loaded}'")
    result = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True,
                            env={**os.environ, "FLWR_TELEMETRY_ENABLED": "0"})
    assert result.returncode == 0, result.stderr


def test_the_site_event_file_follows_the_round(server_identity, site_dir, global_weights, tmp_path):
    client_app.app(instruction(MessageType.TRAIN, global_weights, server_round=3),
                   context(site_dir, tmp_path / "events.jsonl"))
    events = list(read_events(tmp_path / "events.jsonl"))
    kinds = [event["kind"] for event in events]
    assert kinds[:2] == ["plan", "started"] and kinds[-1] == "finished" and "progress" in kinds
    assert events[0]["source"] == "server" and events[0]["plan"] == TRAINING.plan.to_dict()
    assert [e["model"] for e in events if e["kind"] == "evaluation"] == ["global", "local"]
    assert all(e["round"] == 3 and e["job"] == "federation" for e in events if e["kind"] != "global-model")
    assert [e["round"] for e in events if e["kind"] == "global-model"] == [2]  # round 3 started from it
    # Epochs count across rounds, so round 3 of one-epoch rounds trains epoch 3 (new draws each round).
    assert {event["epoch"] for event in events if event["kind"] == "progress"} == {3}


def test_the_site_keeps_its_optimizer_state_from_one_round_to_the_next(
    server_identity, site_dir, global_weights, tmp_path
):
    site = context(site_dir, tmp_path / "events.jsonl")
    steps = []
    for server_round in (1, 2):
        reply = client_app.app(instruction(MessageType.TRAIN, global_weights, server_round), site)
        assert not reply.has_error()
        kept = site.state.array_records["fedseg-optimizer"]
        steps.append(float(kept["0/step"].numpy()))
        assert kept["0/exp_avg"].numpy().shape == global_weights[next(iter(global_weights))].shape
    assert steps[1] == 2 * steps[0] > 0  # round 2 went on counting from round 1's state
    plans = [e["round"] for e in read_events(tmp_path / "events.jsonl") if e["kind"] == "plan"]
    assert plans == [1]  # the plan in force is announced once per run
    assert not any(name.startswith("fedseg-optimizer") for name in reply.content.array_records)


def test_a_packed_message_is_answered_packed_and_a_broken_one_with_a_code(
    server_identity, site_dir, global_weights, tmp_path
):
    message = instruction(MessageType.TRAIN, global_weights)
    message.content["arrays"] = pack(message.content.array_records["arrays"])
    reply = client_app.app(message, context(site_dir, tmp_path / "events.jsonl"))
    assert not reply.has_error() and is_packed(reply.content.array_records["arrays"])
    arrays = {name: array.numpy() for name, array in unpack(reply.content.array_records["arrays"]).items()}
    assert {k: v.shape for k, v in arrays.items()} == {k: v.shape for k, v in global_weights.items()}

    packed = message.content.array_records["arrays"]
    message.content["arrays"] = ArrayRecord({"packed/data": packed["packed/data"],
                                             "packed/layout": Array(np.frombuffer(b"{", np.uint8))})
    reply = client_app.app(message, context(site_dir, tmp_path / "events.jsonl"))
    assert reply.has_error() and (reply.error.code, reply.error.reason) == (103, "model")


def test_a_failing_site_answers_with_a_code_and_keeps_the_details(server_identity, global_weights, tmp_path):
    missing = tmp_path / "secret-patient-folder"
    missing.mkdir()
    reply = client_app.app(instruction(MessageType.TRAIN, global_weights),
                           context(missing, tmp_path / "events.jsonl"))
    assert reply.has_error() and not reply.has_content()
    assert (reply.error.code, reply.error.reason) == (SiteErrorCode.DATA, "data")
    error = [event for event in read_events(tmp_path / "events.jsonl") if event["kind"] == "error"]
    assert error[0]["code"] == SiteErrorCode.DATA and "secret-patient-folder" in error[0]["message"]


def test_a_site_whose_labels_differ_refuses_the_model(server_identity, site_dir, global_weights, tmp_path):
    other = {0: "background", 1: "liver"}
    reply = client_app.app(instruction(MessageType.TRAIN, global_weights, labels=other),
                           context(site_dir, tmp_path / "events.jsonl"))
    assert reply.error.code == SiteErrorCode.MODEL


def test_weights_of_another_network_are_refused(server_identity, site_dir, global_weights, tmp_path):
    wrong = {**global_weights}
    wrong.pop(next(iter(wrong)))
    site = context(site_dir, tmp_path / "events.jsonl")
    reply = client_app.app(instruction(MessageType.TRAIN, wrong), site)
    assert reply.error.code == SiteErrorCode.MODEL


def test_an_incomplete_node_config_is_a_settings_error(server_identity, global_weights):
    broken = Context(run_id=1, node_id=7, node_config={"site-name": "A"}, state=RecordDict(), run_config={})
    reply = client_app.app(instruction(MessageType.TRAIN, global_weights), broken)
    assert reply.error.code == SiteErrorCode.SETTINGS
    with pytest.raises(SiteRoundError, match="modality, data-dir, event-file"):
        SiteSettings.from_node_config({"site-name": "A"})


def test_evaluate_scores_the_global_model_on_the_validation_cases(
    server_identity, site_dir, global_weights, tmp_path
):
    reply = client_app.app(instruction(MessageType.EVALUATE, global_weights),
                           context(site_dir, tmp_path / "events.jsonl"))
    metrics = dict(reply.content.metric_records["metrics"])
    assert metrics["num-examples"] == 1 and {"dice", "dice/disk", "hd95", "hd95/disk"} <= set(metrics)
    assert not reply.content.array_records


def _record(server_round: int, site: str, dice: float) -> dict:
    return {"round": server_round, "phase": "train", "site": site, "status": "accepted", "num_examples": 6,
            "metrics": {"after/dice": dice}, "node_id": 5, "update_norm": 0.1}


def test_the_shared_history_reaches_the_event_file_once(server_identity, site_dir, global_weights, tmp_path):
    site = context(site_dir, tmp_path / "events.jsonl")
    first = json.dumps([_record(1, "CT Hospital", 0.2), _record(1, "MR Clinic", 0.3)])
    second = json.dumps([*json.loads(first), _record(2, "MR Clinic", 0.4)])
    client_app.app(instruction(MessageType.EVALUATE, global_weights, 2, **{"site-history": first}), site)
    client_app.app(instruction(MessageType.EVALUATE, global_weights, 3, **{"site-history": second}), site)
    shared = [(e["round"], e["site"], e["metrics"]["after/dice"])
              for e in read_events(tmp_path / "events.jsonl") if e["kind"] == "site-metrics"]
    assert shared == [(1, "CT Hospital", 0.2), (1, "MR Clinic", 0.3), (2, "MR Clinic", 0.4)]


def test_shared_records_that_are_not_plain_numbers_are_skipped(tmp_path):
    records = [_record(1, "A", 0.5), {**_record(1, "B", 0.5), "metrics": {"x": "/data/p1.nii"}}, "junk"]
    with EventWriter(tmp_path / "events.jsonl", "federation") as events:
        assert emit_shared_history(events, json.dumps(records), 0) == 1
        assert emit_shared_history(events, "not json", 1) == 1
    assert [e["site"] for e in read_events(tmp_path / "events.jsonl")] == ["A"]


def test_the_model_description_carries_the_plan_and_garbage_is_a_config_error():
    config = model_from_json(model_to_json(TRAINING))
    assert (config.network, config.plan, config.batch_size) == (TRAINING.network, PLAN, 4)
    assert config.labels == LABELS
    with pytest.raises(ConfigError, match="model description is unusable"):
        model_from_json('{"network": 1}')
    broken = json.loads(model_to_json(TRAINING))
    broken["plan"]["patch_size"] = [15, 16]  # not a multiple of the (8, 16) U-Net's 2
    with pytest.raises(ConfigError, match="model description is unusable: patch size"):
        model_from_json(json.dumps(broken))
