"""Federation state from events: this site's rounds, every site's metrics, the dataset draft."""

from pathlib import Path

import pytest

from app.models.dataset import TRAINING, VALIDATION, CaseCheck, DatasetDraft
from app.models.federation import SiteRun, SiteState
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
