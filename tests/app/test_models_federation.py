"""Federation state from events: this site's rounds, every site's metrics, the plan in force and planning
problems, the dataset draft."""

from pathlib import Path

import pytest

from app.models.dataset import TRAINING, VALIDATION, CaseCheck, DatasetDraft
from app.models.federation import SiteRun, SiteState, plan_in_force
from app.models.metrics import FederationMetrics


def site_metrics(number, site, phase, metrics, status="accepted"):
    return {"kind": "site-metrics", "time": 0, "job": "site", "round": number, "site": site, "phase": phase,
            "status": status, "num_examples": 8, "metrics": metrics}


def test_site_run_follows_rounds():
    run = SiteRun()
    run.apply_all([
        {"kind": "started", "round": 1, "epochs": 2},
        {"kind": "progress", "round": 1, "epoch": 2, "epochs": 2, "step": 1, "steps": 4},
    ])
    assert run.state is SiteState.TRAINING and run.fraction == pytest.approx(5 / 8)
    run.apply_all([
        {"kind": "finished", "round": 1,
         "metrics": {"train-loss": 0.5, "before/dice": 0.2, "after/dice": 0.4}},
        {"kind": "evaluation", "round": 1, "phase": "evaluate", "metrics": {"dice": 0.3}},
        {"kind": "progress", "epoch": 1},  # no round: not a federated event
    ])
    row = run.rows[1]
    assert (row.loss, row.dice_before, row.dice_after, row.dice_global) == (0.5, 0.2, 0.4, 0.3)
    assert run.state is SiteState.WAITING and run.state.active
    run.apply_all([{"kind": "error", "round": 2, "code": 3, "message": "out of memory"}])
    assert "out of memory" in run.message


PLAN_LINE = "2D, 0.8 x 0.8 mm in-plane, slices as stored, patch 96 x 96"


def plan_event(sites):
    return {"kind": "plan", "time": 0, "job": "server", "source": "fingerprints", "description": PLAN_LINE,
            "plan": {"format": "fedseg-plan/1"}, "sites": sites}


def test_the_site_shows_the_plan_event_in_force():
    run = SiteRun()
    assert run.plan_line().startswith("Plan: made by the server")  # nothing known yet
    shared = plan_in_force(plan_event([{"site": "CT", "node_id": 1, "status": "accepted", "cases": 4}]))
    assert run.plan_line(shared) == f"Plan: {PLAN_LINE} (from 1 of 1 site(s)' fingerprints)"
    run.apply_all([plan_event([
        {"site": "CT", "node_id": 1, "status": "accepted", "cases": 4},
        {"site": "MR", "node_id": 2, "status": "malformed", "cases": None},
    ])])
    expected = f"Plan: {PLAN_LINE} (from 1 of 2 site(s)' fingerprints); left out: MR (malformed)"
    assert run.plan_line() == expected
    assert run.rows == {}  # a plan is no round
    kept = plan_in_force({"kind": "plan", "source": "checkpoint", "description": PLAN_LINE})
    assert kept is not None and kept.line() == f"{PLAN_LINE} (kept from the run's checkpoint)"
    assert plan_in_force({"kind": "plan", "description": 3}) is None


def test_a_failed_planning_query_is_a_planning_problem_not_a_round():
    run = SiteRun()
    run.apply_all([{"kind": "error", "round": 0, "code": 7, "message": "the dataset folder is gone"}])
    assert run.rows == {}
    assert run.planning_problem == "planning failed here: the dataset folder is gone"
    assert run.plan_line() == "Planning failed here: the dataset folder is gone"
    run.apply_all([{"kind": "started", "round": 1, "epochs": 1}])
    assert list(run.rows) == [1]


def test_federation_metrics_show_the_plan_and_keep_planning_out_of_the_rounds():
    metrics = FederationMetrics()
    changes = []
    metrics.changed.connect(lambda: changes.append(1))
    assert metrics.plan_line() == ""
    metrics.apply_all([plan_event([{"site": "CT", "node_id": 1, "status": "accepted", "cases": 4}])])
    assert changes and metrics.plan_line() == f"Plan: {PLAN_LINE} (from 1 of 1 site(s)' fingerprints)"
    metrics.apply_all([site_metrics(0, "MR", "train", {}, status="malformed"),  # not a round
                       site_metrics(1, "CT", "train", {"before/dice": 0.1})])
    assert metrics.rounds() == [1] and len(metrics.table()[1]) == 1
    metrics.apply_all([{"kind": "error", "job": "server", "code": "PlanningError",
                        "message": "only 0 of 2 site(s) sent a usable fingerprint"}])
    assert metrics.plan_line() == "Planning failed: only 0 of 2 site(s) sent a usable fingerprint"
    metrics.apply_all([{"kind": "error", "job": "server", "code": "RuntimeError", "message": "later"}])
    assert metrics.plan_line().startswith("Planning failed: only 0")  # not a planning error
    metrics.clear()
    assert metrics.plan_line() == "" and metrics.plan is None


def test_federation_metrics_prefer_the_evaluated_dice_and_export_csv():
    metrics = FederationMetrics()
    metrics.apply_all([
        site_metrics(1, "CT", "train", {"before/dice": 0.1, "train-loss": 1.0}),
        site_metrics(1, "MR", "train", {"before/dice": 0.05}),
        site_metrics(2, "CT", "train", {"before/dice": 0.3}),
        site_metrics(2, "CT", "evaluate", {"dice": 0.35}),
        site_metrics(2, "MR", "train", {"before/dice": 0.2}, status="non-finite"),
        {"kind": "site-metrics", "round": "two", "site": "X", "phase": "train"},  # malformed: ignored
        {"kind": "progress"},
    ])
    assert metrics.sites() == ["CT", "MR"] and metrics.rounds() == [1, 2]
    assert metrics.dice_by_site() == {"CT": [(1, 0.1), (2, 0.35)], "MR": [(1, 0.05)]}
    header, rows = metrics.table()
    assert header[:6] == ["round", "site", "phase", "status", "examples", "dice"]
    assert len(rows) == 5 and rows[-1][3] == "non-finite"
    assert metrics.to_csv().splitlines()[0].startswith("round,site,phase,status,examples,dice")
    metrics.apply_all([site_metrics(1, "CT", "train", {"before/dice": 0.15})])  # a repeat replaces
    assert metrics.dice_by_site()["CT"][0] == (1, 0.15) and len(metrics.table()[1]) == 5


def test_federation_metrics_give_each_private_sites_epsilon_per_round():
    metrics = FederationMetrics()
    metrics.apply_all([
        site_metrics(1, "CT", "train", {"before/dice": 0.1, "epsilon": 2.5}),
        site_metrics(1, "CT", "evaluate", {"dice": 0.2}),
        site_metrics(1, "MR", "train", {"before/dice": 0.05, "train-loss": 0.9}),  # no DP at MR
        site_metrics(2, "CT", "train", {"before/dice": 0.3, "epsilon": 4.25}, status="norm-outlier"),
    ])
    assert metrics.epsilon_by_site() == {"CT": [(1, 2.5), (2, 4.25)]}  # spent, though round 2 was dropped
    assert "epsilon" in metrics.table()[0]
    metrics.clear()
    metrics.apply_all([site_metrics(1, "MR", "train", {"before/dice": 0.05, "train-loss": 0.9})])
    assert metrics.epsilon_by_site() == {} and "epsilon" not in metrics.table()[0]


def test_dataset_draft_split_checks_and_statistics():
    draft = DatasetDraft()
    draft.load(Path("/data"), "liver", "ct", {0: "background", 1: "liver", 2: "tumour"}, [])
    draft.add_pairs([(Path(f"/data/img{i}.nii.gz"), Path(f"/data/lab{i}.nii.gz")) for i in range(5)])
    draft.add_pairs([(Path("/data/img0.nii.gz"), None)])  # already there
    draft.split(0.2)
    assert [row.split for row in draft.rows] == [TRAINING] * 4 + [VALIDATION]
    draft.set_check(0, CaseCheck(label_voxels={0: 90, 1: 6, 2: 2}))
    draft.set_check(1, CaseCheck(label_voxels={0: 90, 1: 2}))
    draft.set_check(2, CaseCheck("cannot be read"))
    stats = draft.statistics()
    assert (stats.training, stats.validation, stats.checked, stats.problems) == (4, 1, 3, 1)
    assert stats.label_share == pytest.approx({"liver": 0.8, "tumour": 0.2})
    draft.remove([0, 4])
    assert len(draft.rows) == 3 and draft.rows[0].image.name == "img1.nii.gz"
