"""Personalised site models through the server's run loop (real ClientApps in-process): with
[federation] personalise_epochs the final evaluation asks every site to fine-tune the final global model on
its own data; each site keeps it beside the global model and the server records its scores. Without the
setting no site fine-tunes.

Ground truth: the server's own model.pt (the global model every site must keep unchanged) and the kept
personalised checkpoints, scored here on each site's validation cases.
"""

import numpy as np
import pytest
from site_data import server_toml, write_disk_site
from test_server_app import LocalGrid, site_context

from federation.config import load_server_config
from federation.server_run import METRICS_NAME, read_metrics, run_server
from federation.task import validation_cases
from segmentation.algorithm import SegmentationAlgorithm
from segmentation.checkpoint import load_checkpoint
from segmentation.datalist import load_dataset
from segmentation.errors import ConfigError
from segmentation.settings import GLOBAL_MODEL_NAME, PERSONALISED_MODEL, PERSONALISED_MODEL_NAME

pytestmark = pytest.mark.usefixtures("case_cache")  # conftest: each test its own case cache

SITES = {11: "Site A", 12: "Site B"}


def run(tmp_path, personalise: str):
    """A one-round run of two sites whose evaluate configs are recorded; the grid's site folders."""
    data = [write_disk_site(tmp_path / "data-a", seed=0), write_disk_site(tmp_path / "data-b", seed=1)]
    folders = {node: tmp_path / name for node, name in SITES.items()}
    for folder in folders.values():
        folder.mkdir()
    grid = LocalGrid({node: site_context(node, SITES[node], data[index], folders[node])
                      for index, node in enumerate(SITES)})
    asked = []
    deliver = grid.answer

    def answer(message):
        if message.metadata.message_type == "evaluate":
            asked.append(message.content.config_records["config"].get("personalise-epochs"))
        return deliver(message)

    grid.answer = answer
    path = tmp_path / "server.toml"
    path.write_text(server_toml("run", rounds=1).replace("[federation]\n", f"[federation]\n{personalise}\n"))
    run_server(grid, load_server_config(path), resume=False)
    return asked, folders, data


def test_every_site_keeps_a_personalised_model_beside_the_unchanged_global_one(server_identity, tmp_path):
    asked, folders, data = run(tmp_path, "personalise_epochs = 2")
    assert asked == [2, 2]
    final = load_checkpoint(tmp_path / "run" / "model.pt")
    records = {record.site: record for record in read_metrics(tmp_path / "run" / METRICS_NAME)
               if record.phase == "evaluate"}
    for index, (node, name) in enumerate(SITES.items()):
        # Site folders hold the site's event file; the models are kept beside it.
        kept_global = load_checkpoint(folders[node] / GLOBAL_MODEL_NAME)
        for key, tensor in final.state_dict.items():
            np.testing.assert_array_equal(kept_global.state_dict[key].numpy(), tensor.numpy(), err_msg=key)
        personalised = load_checkpoint(folders[node] / PERSONALISED_MODEL_NAME)
        assert (personalised.kind, personalised.round) == (PERSONALISED_MODEL, 1)
        assert any(not np.array_equal(personalised.state_dict[key].numpy(), tensor.numpy())
                   for key, tensor in final.state_dict.items())
        scores = SegmentationAlgorithm.from_checkpoint(personalised, device="cpu").evaluate(
            validation_cases(load_dataset(data[index]))).metrics
        assert records[name].metrics["personalised/dice"] == pytest.approx(scores["dice"], abs=1e-5)


def test_by_default_no_site_fine_tunes(server_identity, tmp_path):
    asked, folders, _ = run(tmp_path, "")
    assert asked == [0, 0]
    assert not any((folder / PERSONALISED_MODEL_NAME).exists() for folder in folders.values())


def test_personalise_epochs_must_not_be_negative(tmp_path):
    path = tmp_path / "server.toml"
    text = server_toml("run", rounds=1)
    path.write_text(text.replace("[federation]\n", "[federation]\npersonalise_epochs = -1\n"))
    with pytest.raises(ConfigError, match=r"personalise_epochs must be an integer of at least 0, got -1"):
        load_server_config(path)
