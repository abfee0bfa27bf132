"""Every page builds and draws; inference segments the open study and exports; the dataset page
lists per-file problems without failing; metrics follow a federation's events; settings persist."""

import json

import numpy as np
import pytest
from matplotlib.image import imread

from app.commands.gui import PAGE_NAMES
from app.qt.main_window import PAGES
from segmentation.io import read_volume, write_volume
from segmentation.synth import generate_dataset
from segmentation.volume import Volume


def test_every_page_builds_and_draws(qtbot, window):
    assert PAGE_NAMES == tuple(spec.name for spec in PAGES)
    for name in PAGE_NAMES:
        page = window.navigate(name)
        assert window.current_page == name and window.nav_buttons[name].isChecked()
        image = window.grab().toImage()
        assert image.width() >= 1000 and page.isVisible()


def test_inference_segments_the_open_study_and_exports_the_mask(qtbot, window, tmp_path, tiny_checkpoint):
    array = np.random.default_rng(1).normal(size=(4, 24, 20)).astype(np.float32)
    image = Volume(array, spacing=(2.0, 2.0, 4.0), modality="ct")
    path = write_volume(image, tmp_path / "phantom.nii.gz")
    window.open_study(path)
    viewer = window.workbench.viewer
    qtbot.waitUntil(lambda: viewer.has_study, timeout=30_000)
    page = window.navigate("inference")
    assert not page.segment_button.isEnabled()
    page.model_path.set_path(tiny_checkpoint)
    qtbot.waitUntil(lambda: "U-Net" in page.model_info.text(), timeout=60_000)
    assert page.segment_button.isEnabled() and not page.export_nifti.isEnabled()
    page.segment_button.click()
    qtbot.waitUntil(lambda: page.result is not None, timeout=60_000)
    assert viewer.has_labels and viewer.label_source == "prediction of model.pt"
    names = [page.table.item(row, 0).text() for row in range(page.table.rowCount())]
    assert names == ["liver", "spleen"]
    total = sum(float(page.table.item(row, 1).text().replace(",", "")) for row in range(2))
    assert total == pytest.approx(np.count_nonzero(page.result.mask.array) * 16 / 1000, abs=0.2)
    assert page.export_nifti.isEnabled() and not page.export_seg.isEnabled()  # not a DICOM study
    page.export(tmp_path / "out" / "mask.nii.gz", dicom=False)
    qtbot.waitUntil(lambda: window.status.text().startswith("Wrote"), timeout=30_000)
    np.testing.assert_array_equal(read_volume(tmp_path / "out" / "mask.nii.gz").array, page.result.mask.array)
    assert window.workbench.settings.last_checkpoint == str(tiny_checkpoint)


def test_dataset_page_lists_problems_and_saves_a_loadable_index(qtbot, window, tmp_path):
    root = generate_dataset(tmp_path / "site", "mr-t1", 3, 0, size=16).root
    page = window.navigate("dataset")
    page.open_dataset(root)
    qtbot.waitUntil(lambda: page.draft.statistics().checked == 3, timeout=30_000)
    assert page.tile_problems.value.text() == "0" and page.tile_validation.value.text() == "1"
    assert set(page.draft.statistics().label_share) <= {"liver", "kidney", "spleen", "pancreas"}
    broken = tmp_path / "loose" / "broken.nii.gz"
    broken.parent.mkdir()
    broken.write_bytes(b"garbage")
    page.add_pairs([(broken, None)])
    qtbot.waitUntil(lambda: page.draft.statistics().checked == 4, timeout=30_000)
    status = page.table.item(3, 6).text()
    assert page.tile_problems.value.text() == "1" and "broken.nii.gz" in status
    page.remove_selected()  # nothing selected: nothing removed
    assert len(page.draft.rows) == 4
    page.draft.remove([3])
    page.draft.split(0.3)
    original = (tmp_path / "site" / "dataset.json").read_bytes()
    page.save_to(tmp_path / "site")
    saved = json.loads((tmp_path / "site" / "dataset.json").read_text())
    assert (saved["numTraining"], saved["numTest"]) == (2, 1) and saved["fedseg"]["modality"] == "mr-t1"
    (backup,) = (tmp_path / "site").glob("dataset.json.backup-*")  # its own file, replaced and kept
    assert backup.read_bytes() == original and str(backup) in window.status.text()
    assert window.workbench.settings.recent_datasets[0] == str(tmp_path / "site")


def test_metrics_follow_site_metrics_and_export(qtbot, window, tmp_path):
    events = tmp_path / "events.jsonl"
    scores = [(1, "CT Hospital", 0.4), (1, "MR Clinic", 0.2), (2, "CT Hospital", 0.6)]
    records = [{"kind": "site-metrics", "time": 0, "job": "server", "round": number, "site": site,
                "phase": "evaluate", "status": "accepted", "num_examples": 2, "metrics": {"dice": dice}}
               for number, site, dice in scores]
    events.write_text("".join(json.dumps(record) + "\n" for record in records[:2]), encoding="utf-8")
    page = window.navigate("metrics")
    page.follow_file(events)
    assert page.table.rowCount() == 2 and "2 site(s), 1 round(s)" in page.caption.text()
    with open(events, "a", encoding="utf-8") as stream:
        stream.write(json.dumps(records[2]) + "\n")
    page.follow()
    assert page.table.rowCount() == 3
    lines = {line.get_label(): list(line.get_ydata()) for line in page.site_axes.get_lines()}
    assert lines == {"CT Hospital": [0.4, 0.6], "MR Clinic": [0.2]}
    page.save_csv(tmp_path / "out.csv")
    page.save_png(tmp_path / "out.png")
    assert (tmp_path / "out.csv").read_text().splitlines()[1].startswith("1,CT Hospital,evaluate,accepted")
    assert (tmp_path / "out.png").stat().st_size > 1000
    assert not page.privacy.isVisibleTo(page)  # no site trains with DP
    private = [{**records[0], "round": number, "phase": "train", "metrics": {"epsilon": epsilon}}
               for number, epsilon in ((1, 3.0), (2, 5.5))]
    with open(events, "a", encoding="utf-8") as stream:
        stream.write("".join(json.dumps(record) + "\n" for record in private))
    page.follow()
    assert page.privacy.isVisibleTo(page)
    lines = {line.get_label(): list(line.get_ydata()) for line in page.epsilon_axes.get_lines()}
    assert lines == {"CT Hospital": [3.0, 5.5]}
    # The exported PNG now holds the privacy chart below the Dice charts, as matplotlib renders it alone.
    page.save_png(tmp_path / "private.png")
    figure = page.privacy_canvas.figure
    figure.savefig(tmp_path / "privacy-alone.png", dpi=150, facecolor=figure.get_facecolor())
    exported, alone = imread(tmp_path / "private.png"), imread(tmp_path / "privacy-alone.png")
    assert exported.shape[0] > alone.shape[0]
    difference = np.abs(exported[-alone.shape[0]:, :alone.shape[1]] - alone)  # two renders: antialiasing
    assert float(difference.mean()) < 1e-3 and float(np.mean(difference > 2 / 255)) < 1e-3


def test_federation_join_refuses_an_incomplete_form_and_settings_persist(qtbot, window, tmp_path,
                                                                         error_dialogs):
    page = window.navigate("federation")
    page.name.setText("")
    page.join_button.click()
    assert error_dialogs(page) and "site name" in error_dialogs(page)[0].text()
    assert page.session.job is None
    settings = window.navigate("settings")
    settings.workspace.set_path(tmp_path / "elsewhere")
    reloaded = type(window.workbench.store)(window.workbench.store.path).load()
    assert reloaded.workspace == str(tmp_path / "elsewhere")


def test_federation_and_metrics_pages_show_the_plan_and_no_planning_round(qtbot, window, tmp_path):
    description = "2D, 0.8 x 0.8 mm in-plane, slices as stored, patch 96 x 96"
    events = tmp_path / "events.jsonl"
    sites = [{"site": "CT Hospital", "node_id": 1, "status": "accepted", "cases": 4},
             {"site": "MR Clinic", "node_id": 2, "status": "other-labels", "cases": None}]
    plan = {"kind": "plan", "time": 0, "job": "server", "source": "fingerprints", "description": description,
            "plan": {}, "sites": sites}
    events.write_text(json.dumps(plan) + "\n", encoding="utf-8")
    metrics = window.navigate("metrics")
    metrics.follow_file(events)
    expected = f"Plan: {description} (from 1 of 2 site(s)' fingerprints); left out: MR Clinic (other-labels)"
    assert metrics.plan_line.text() == expected and metrics.plan_line.isVisibleTo(metrics)
    federation = window.navigate("federation")
    assert federation.plan_line.text() == expected  # the followed server's plan
    federation.run.apply_all([{"kind": "error", "round": 0, "code": 7, "message": "no dataset.json"},
                              {"kind": "started", "round": 1, "epochs": 1}])
    assert federation.table.rowCount() == 1 and federation.table.item(0, 0).text() == "1"
    assert federation.plan_line.text() == "Planning failed here: no dataset.json"
