"""The Inference page takes the federation's latest global model, or a site's personalised model, in one
click (each button says why it is off while no site of this workbench keeps one) and shows above Segment,
without blocking it, when the open study does not fit the model."""

import numpy as np

from app.qt.pages.inference import NO_GLOBAL_MODEL, NO_PERSONALISED_MODEL
from segmentation.io import write_volume
from segmentation.volume import Volume


def keep_model(folder, server_round: int, personalised: bool = False):
    """What a site keeps: an untrained 2-level 2D U-Net of labels background, liver, spleen, planned at
    2 mm in-plane with 32 x 32 patches, labelled with its federated round, and the event announcing it;
    the global model, or the personalised one fine-tuned on the site's CT data."""
    import torch

    from segmentation.checkpoint import Checkpoint, save_checkpoint
    from segmentation.events import EventWriter
    from segmentation.plan import Plan
    from segmentation.settings import GLOBAL_MODEL, PERSONALISED_MODEL, NetworkConfig

    network = NetworkConfig(out_channels=3, channels=(8, 16))
    torch.manual_seed(0)
    plan = Plan(labels={0: "background", 1: "liver", 2: "spleen"}, spatial_dims=2,
                target_spacing=(2.0, 2.0, 5.0), patch_size=(32, 32))
    kind, name = ((PERSONALISED_MODEL, "personalised-model") if personalised
                  else (GLOBAL_MODEL, "global-model"))
    path = folder / f"{name}.pt"
    save_checkpoint(Checkpoint(network, plan, network.build().state_dict(), augmentation="gin",
                               epoch=server_round, round=server_round, kind=kind,
                               train_modality="ct" if personalised else "unknown"), path)
    with EventWriter(folder / "events.jsonl", job="federation") as events:
        events.emit(name, round=server_round)
    return path


def test_one_click_takes_the_latest_global_model_and_a_misfit_study_is_flagged(qtbot, window, tmp_path):
    page = window.navigate("inference")
    assert not page.use_global.isEnabled() and page.use_global.toolTip() == NO_GLOBAL_MODEL
    assert not page.use_personalised.isEnabled()

    workspace = window.workbench.settings.workspace_dir
    model = keep_model(workspace / "federation" / "CT-Hospital", server_round=2)
    window.navigate("home")
    window.navigate("inference")  # shown again: it looks again
    qtbot.waitUntil(page.use_global.isEnabled, timeout=30_000)
    assert "round 2" in page.use_global.toolTip() and "CT-Hospital" in page.use_global.toolTip()
    assert not page.use_personalised.isEnabled()  # a global model alone: no personalised one yet
    assert page.use_personalised.toolTip() == NO_PERSONALISED_MODEL

    page.use_global.click()
    assert page.model_path.path == model
    qtbot.waitUntil(lambda: "federated global model, round 2" in page.model_info.text(), timeout=30_000)
    assert not page.fit_info.isVisible()  # no study open: nothing to judge

    # Voxels of 0.25 mm, 8 times finer than the model's 2 mm: a warning, and Segment stays available.
    image = Volume(np.random.default_rng(1).normal(size=(3, 40, 40)).astype(np.float32),
                   spacing=(0.25, 0.25, 5.0), modality="ct")
    window.open_study(write_volume(image, tmp_path / "fine.nii.gz"))
    window.navigate("inference")
    qtbot.waitUntil(page.fit_info.isVisible, timeout=30_000)
    assert page.fit_info.text().startswith("Warning: the study's voxels are 0.25 x 0.25 mm")
    assert page.segment_button.isEnabled()


def test_the_model_is_exported_as_a_monai_bundle_and_a_full_folder_asks_first(qtbot, window, tmp_path,
                                                                               monkeypatch, questions):
    import json

    from PySide6.QtWidgets import QFileDialog

    from app.qt.pages.inference import REPLACE_BUNDLE

    page = window.navigate("inference")
    page.model_path.set_path(keep_model(tmp_path / "site", server_round=3))
    out = tmp_path / "bundle"
    monkeypatch.setattr(QFileDialog, "getExistingDirectory", lambda *args: str(out))
    page.export_bundle.click()
    metadata = out / "configs" / "metadata.json"
    qtbot.waitUntil(metadata.is_file, timeout=60_000)
    assert json.loads(metadata.read_text())["network_data_format"]["outputs"]["pred"]["num_channels"] == 3
    assert questions.asked == []  # a new folder: nothing to ask
    (out / "notes.txt").write_text("the operator's notes")
    questions.answers = ["Cancel"]
    before = metadata.stat().st_mtime_ns
    page.export_bundle.click()
    assert len(questions.asked) == 1 and "holds files already" in questions.asked[0]
    assert metadata.stat().st_mtime_ns == before
    questions.answers = [REPLACE_BUNDLE]
    page.export_bundle.click()
    qtbot.waitUntil(lambda: metadata.stat().st_mtime_ns != before, timeout=60_000)
    assert (out / "notes.txt").read_text() == "the operator's notes"


def test_one_click_takes_the_sites_personalised_model_kept_beside_the_global_one(qtbot, window):
    page = window.navigate("inference")
    assert not page.use_personalised.isEnabled() and page.use_personalised.toolTip() == NO_PERSONALISED_MODEL

    site = window.workbench.settings.workspace_dir / "federation" / "CT-Hospital"
    global_model = keep_model(site, server_round=3)
    personalised = keep_model(site, server_round=3, personalised=True)
    window.navigate("home")
    window.navigate("inference")  # shown again: it looks again
    qtbot.waitUntil(page.use_personalised.isEnabled, timeout=30_000)
    tip = page.use_personalised.toolTip()
    assert "personalised" in tip and "round 3" in tip and "CT-Hospital" in tip and str(personalised) in tip
    assert page.use_global.isEnabled() and str(global_model) in page.use_global.toolTip()

    page.use_personalised.click()
    assert page.model_path.path == personalised
    qtbot.waitUntil(lambda: "personalised model" in page.model_info.text(), timeout=30_000)
    assert "round 3's global model fine-tuned on CT data" in page.model_info.text()
    page.use_global.click()  # and back: each button takes its own file
    assert page.model_path.path == global_model
    qtbot.waitUntil(lambda: "federated global model, round 3" in page.model_info.text(), timeout=30_000)
