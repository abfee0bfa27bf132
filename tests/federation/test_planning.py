"""The federated plan (FednnU-Net's Federated Fingerprint Extraction), judged reply by reply and in a run.

What must hold: a fingerprint reply that is malformed (not JSON, no cases, free text where a code
belongs, no fingerprint at all) or whose labels are not server.toml's is left out of the plan with its
reason code, logged; a site that answered with an error is left out too; the plan is the one made from
the accepted sites' cases and server.toml's overrides; with fewer usable fingerprints than
min_valid_replies there is no plan and the run fails with one line; a site whose data cannot follow the
plan (other labels) is then left out of every round with its error code, logged.
"""

import json
import logging
from pathlib import Path

import pytest
from fed_replies import content_reply, error_reply
from flwr.app import ConfigRecord, Message, RecordDict
from site_data import LABELS, server_toml, write_disk_site
from test_server_app import LocalGrid, site_context, union_plan

from federation.config import load_server_config
from federation.planning import (
    PlanningError,
    SiteFingerprint,
    federated_plan,
    judge_fingerprint,
    merged_fingerprint,
    plan_for,
)
from federation.server_run import EVENTS_NAME, run_server
from federation.validation import ACCEPTED, MALFORMED, OTHER_LABELS, SITE_ERROR, Verdict
from segmentation.datalist import load_dataset
from segmentation.events import read_events
from segmentation.fingerprint import fingerprint_cases
from segmentation.plan import make_plan, read_plan

pytestmark = pytest.mark.usefixtures("case_cache")  # conftest: each test its own case cache

OTHER = {0: "background", 1: "liver"}


@pytest.fixture(scope="module")
def sites(tmp_path_factory) -> dict[str, Path]:
    """Three sites of different geometry; Site C's dataset names other labels."""
    root = tmp_path_factory.mktemp("sites")
    return {
        "Site A": write_disk_site(root / "a", seed=0),
        "Site B": write_disk_site(root / "b", seed=1, size=24, depth=4, spacing=(0.5, 0.5, 3.0)),
        "Site C": write_disk_site(root / "c", seed=2, size=32, depth=2, spacing=(0.4, 0.4, 5.0),
                                  labels=OTHER),
    }


def fingerprint_text(folder: Path) -> str:
    dataset = load_dataset(folder)
    return json.dumps(fingerprint_cases(dataset.training, dataset.labels).to_dict())


def answer(text: str, node_id: int = 1) -> Message:
    return content_reply(RecordDict({"fingerprint": ConfigRecord({"fingerprint": text}),
                                     "site": ConfigRecord({"site-name": "Site"})}), node_id)


def spoilt(text: str, change) -> str:
    data = json.loads(text)
    change(data)
    return json.dumps(data)


def test_each_reply_is_judged_before_it_joins_the_plan(sites):
    text = fingerprint_text(sites["Site A"])
    verdict, fingerprint = judge_fingerprint(answer(text), LABELS)
    assert verdict.code == ACCEPTED and len(fingerprint.cases) == 2

    def path_as_orientation(data):
        data["cases"][0]["orientation"] = "/data/patients/0042.nii"

    def no_cases(data):
        data["cases"] = []

    def nan_spacing(data):
        data["cases"][0]["spacing"][0] = float("nan")

    malformed = {
        "not JSON": ("{", "not JSON"),
        "a path": (spoilt(text, path_as_orientation), "is not a short code"),
        "no cases": (spoilt(text, no_cases), "has no cases"),
        "NaN": (spoilt(text, nan_spacing), "not a finite number"),
    }
    for what, (bad, reason) in malformed.items():
        verdict, fingerprint = judge_fingerprint(answer(bad), LABELS)
        assert (verdict.code, fingerprint) == (MALFORMED, None), what
        assert reason in verdict.detail, what
    nameless = content_reply(RecordDict({"site": ConfigRecord({"site-name": "A"})}))
    assert judge_fingerprint(nameless, LABELS) == (Verdict(MALFORMED, "the reply holds no fingerprint"), None)
    other, _ = judge_fingerprint(answer(fingerprint_text(sites["Site C"])), LABELS)
    assert other.code == OTHER_LABELS and "{0: 'background', 1: 'liver'}" in other.detail
    failed, _ = judge_fingerprint(error_reply(3), LABELS)
    assert (failed.code, failed.detail) == (SITE_ERROR, "error code 3")
    chatty = answer(text)
    chatty.content.config_records["site"]["patient"] = "Jane Doe"  # free text beside the fingerprint
    verdict, fingerprint = judge_fingerprint(chatty, LABELS)
    assert (verdict.code, fingerprint) == ("unknown-key", None) and "Jane" not in verdict.detail


def test_the_plan_merges_the_accepted_fingerprints_and_takes_the_overrides(sites, tmp_path):
    path = tmp_path / "server.toml"
    path.write_text(server_toml("run"))
    config = load_server_config(path)
    answers = [
        SiteFingerprint(name, node, *judge_fingerprint(answer(fingerprint_text(sites[name]), node), LABELS))
        for node, name in ((12, "Site B"), (11, "Site A"), (13, "Site C"))
    ]
    assert [a.verdict.code for a in answers] == [ACCEPTED, ACCEPTED, OTHER_LABELS]
    plan, fingerprint = federated_plan(answers, config)
    assert plan == union_plan(sites["Site A"], sites["Site B"]) and len(fingerprint.cases) == 4
    # The plan's tissue range holds both sites' studies: the lower of their lows, the higher of their highs.
    a, b = (json.loads(fingerprint_text(sites[name]))["tissue"]["ct"] for name in ("Site A", "Site B"))
    assert a != b
    assert list(plan.tissue["ct"].low) == [min(pair) for pair in zip(a["low"], b["low"], strict=True)]
    assert list(plan.tissue["ct"].high) == [max(pair) for pair in zip(a["high"], b["high"], strict=True)]
    assert merged_fingerprint(answers) == merged_fingerprint(answers[::-1])  # reply order does not matter

    path.write_text(server_toml("run", model="target_spacing = [0.8, 0.8, 2.5]\npatch_size = [32, 24]\n"))
    overridden = plan_for(fingerprint, load_server_config(path))
    assert (overridden.target_spacing, overridden.patch_size) == ((0.8, 0.8, 2.5), (32, 24))
    assert overridden.overridden == ("target_spacing", "patch_size")
    path.write_text(server_toml("run", model="patch_size = [32, 24]\n"))
    assert plan_for(fingerprint, load_server_config(path)) == make_plan(fingerprint, 2, (8, 16), 4,
                                                                       patch_size=(32, 24))


def test_without_enough_usable_fingerprints_there_is_no_plan(tmp_path):
    path = tmp_path / "server.toml"
    path.write_text(server_toml("run").replace("round_timeout = 60", "min_valid_replies = 2"))
    answers = [SiteFingerprint("Site A", 11, Verdict(MALFORMED, "the fingerprint is not JSON")),
               SiteFingerprint("node-12", 12, Verdict(SITE_ERROR, "error code 102 (data)"))]
    with pytest.raises(PlanningError, match=r"only 0 of 2 site\(s\) sent a usable fingerprint, fewer than "
                                            r"\[federation\] min_valid_replies = 2"):
        federated_plan(answers, load_server_config(path))


class TamperingGrid(LocalGrid):
    """Site B's fingerprint reply is spoilt on its way (a path where an orientation code belongs)."""

    def answer(self, message: Message) -> Message:
        reply = super().answer(message)
        if message.metadata.message_type == "query" and message.metadata.dst_node_id == 12:
            record = reply.content.config_records["fingerprint"]
            data = json.loads(record["fingerprint"])
            data["cases"][0]["orientation"] = "/home/site-b/patient-0042.nii"
            record["fingerprint"] = json.dumps(data)
        return reply


def test_a_run_leaves_out_a_malformed_fingerprint_and_a_site_of_other_labels(
    server_identity, sites, tmp_path, caplog
):
    grid = TamperingGrid({node: site_context(node, name, sites[name], tmp_path)
                          for node, name in ((11, "Site A"), (12, "Site B"), (13, "Site C"))})
    path = tmp_path / "server.toml"
    path.write_text(server_toml("run", rounds=1))
    with caplog.at_level(logging.WARNING):
        state = run_server(grid, load_server_config(path), resume=False)

    assert read_plan(tmp_path / "run" / "plan.json") == union_plan(sites["Site A"])
    event = next(e for e in read_events(tmp_path / "run" / EVENTS_NAME) if e["kind"] == "plan")
    assert [(s["site"], s["status"], s["cases"]) for s in event["sites"]] == [
        ("Site A", ACCEPTED, 2), ("Site B", MALFORMED, None), ("Site C", OTHER_LABELS, None)]
    logged = caplog.text
    assert "fingerprint of site 'Site B' (node 12) left out of the plan: malformed:" in logged
    assert "fingerprint of site 'Site C' (node 13) left out of the plan: other-labels:" in logged
    assert "patient-0042" not in json.dumps(event)  # the site's junk stays in the server's log

    # Site C cannot follow the plan (its labels differ): it answers every round with the model error code.
    statuses = {(r.phase, r.site): r.status for r in state.records}
    assert statuses == {("train", "Site A"): ACCEPTED, ("train", "Site B"): ACCEPTED,
                        ("train", "Site C"): SITE_ERROR, ("evaluate", "Site A"): ACCEPTED,
                        ("evaluate", "Site B"): ACCEPTED, ("evaluate", "Site C"): SITE_ERROR}
    assert "dropped the reply of site 'Site C' (node 13): site-error: error code 103 (model)" in logged


def test_a_run_without_a_usable_fingerprint_fails_before_round_1(server_identity, sites, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    grid = LocalGrid({11: site_context(11, "Site C", sites["Site C"], tmp_path),
                      12: site_context(12, "Site D", empty, tmp_path)})
    path = tmp_path / "server.toml"
    path.write_text(server_toml("run", rounds=1))
    with pytest.raises(PlanningError, match="only 0 of 2 site"):
        run_server(grid, load_server_config(path), resume=False)
    assert {kind for _, _, kind in grid.delivered} == {"query"}
    assert not (tmp_path / "run" / "plan.json").exists() and not (tmp_path / "run" / "model.pt").exists()
    error = [e for e in read_events(tmp_path / "run" / EVENTS_NAME) if e["kind"] == "error"]
    assert error[0]["code"] == "PlanningError" and "no plan can be made" in error[0]["message"]

