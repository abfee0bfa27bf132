"""A plaintext demo federation through real Flower processes on 127.0.0.1 (tiny data), with its
baselines: when it ends, every site holds the federation's final global model in its own folder,
labelled with the last round, equal to the server's model, and beside it its personalised model; the
workbench finds it and segments a site's study with it onto the study's own grid; and the report scores
the federated, local-only and centralized models on every site's test set, each site's personalised
model on its own, and what every round cost."""

from __future__ import annotations

import json

import numpy as np
import pytest

from app.services.inference import latest_global_model, segment
from app.services.studies import load_study
from federation.demo.federated import site_model_file
from federation.demo.run import run_demo
from federation.demo.settings import SITE_NAMES, DemoSettings
from segmentation.checkpoint import load_checkpoint
from segmentation.datalist import load_dataset
from segmentation.io import read_volume
from segmentation.settings import PERSONALISED_MODEL, PERSONALISED_MODEL_NAME

pytestmark = pytest.mark.slow

TINY = DemoSettings(sites=("ct", "mr-t1"), rounds=2, local_epochs=1, train_cases=2, test_cases=1,
                    volume_size=16, channels=(8, 16))


def test_a_plaintext_demo_leaves_every_site_the_global_model_and_scores_its_baselines(tmp_path, monkeypatch):
    monkeypatch.setenv("FEDSEG_CACHE_DIR", str(tmp_path / "cache"))
    out = tmp_path / "workspace" / "demo-federation"
    run_demo(out, TINY, baselines=True)
    server = load_checkpoint(out / "federation" / "run" / "model.pt")
    assert server.round == TINY.rounds
    for modality in TINY.sites:
        kept = load_checkpoint(site_model_file(out / "federation", SITE_NAMES[modality]))
        assert kept.round == TINY.rounds and kept.plan == server.plan
        for name, tensor in server.state_dict.items():
            np.testing.assert_allclose(kept.state_dict[name].numpy(), tensor.numpy(), rtol=1e-6, atol=1e-7,
                                       err_msg=name)
        personalised = load_checkpoint(site_model_file(out / "federation", SITE_NAMES[modality],
                                                       PERSONALISED_MODEL_NAME))
        assert (personalised.kind, personalised.round, personalised.train_modality) == (
            PERSONALISED_MODEL, TINY.rounds, modality)

    found = latest_global_model(tmp_path / "workspace")  # what Inference's one click takes
    assert found is not None and found.round == TINY.rounds
    case = load_dataset(out / "data" / "ct").test[0]
    study = load_study(case.image)
    result = segment(found.path, study)
    truth = read_volume(case.label)
    assert result.mask.array.shape == truth.array.shape == study.image.array.shape
    assert np.allclose(result.mask.direction, study.image.direction)
    assert np.allclose(result.mask.origin, study.image.origin)
    assert set(np.unique(result.mask.array)) <= set(server.labels)

    report = json.loads((out / "report.json").read_text(encoding="utf-8"))
    names = [SITE_NAMES[modality] for modality in TINY.sites]
    expected = {"federated", "centralized", *(f"local-only {name}" for name in names)}
    assert {(row["model"], row["test_site"]) for row in report["results"]} == {
        (model, name) for model in expected for name in names} | {("personalised", name) for name in names}
    assert set(report["verdict"]["checks"]) >= {"federated_vs_centralized", "personalised_keeps_own_modality"}
    assert report["ratio_to_centralized"] > 0
    assert all(row["personalised"] is not None for row in report["per_site"].values())
    summaries = report["round_summaries"]
    assert [summary["round"] for summary in summaries] == [1, 2]
    assert all(site["status"] == "accepted" and site["array_bytes_received"] > 0
               for summary in summaries for site in summary["sites"])
