"""The centralized cross-modality experiment end to end, at a size that runs in seconds."""

import json

import pytest

from segmentation.cross_modality import CrossModalityReport, CrossModalitySettings, run_cross_modality
from segmentation.datalist import load_dataset
from segmentation.io import read_volume

TINY = CrossModalitySettings(
    augmentations=("none", "gin"), test_modalities=("ct", "mr-t1"), train_cases=2, test_cases=1,
    volume_size=32, channels=(8, 16), epochs=1, batch_size=8,
)


@pytest.fixture(scope="module")
def tiny_report(tmp_path_factory):
    out = tmp_path_factory.mktemp("experiment")
    events = []
    return out, run_cross_modality(out, TINY, listeners=(events.append,)), events


def test_report_json_has_one_row_per_augmentation_and_test_modality(tiny_report):
    out, report, _ = tiny_report
    data = json.loads((out / "report.json").read_text())
    rows = {(row["aug"], row["test_modality"]) for row in data["results"]}
    assert rows == {(a, m) for a in TINY.augmentations for m in TINY.test_modalities}
    for row in data["results"]:
        assert set(row) >= {"aug", "train_modality", "test_modality", "dice", "dice_per_label"}
        assert row["train_modality"] == "ct"
        assert 0.0 <= row["dice"] <= 1.0
        assert set(row["dice_per_label"]) == {"liver", "kidney", "spleen", "pancreas"}
    dice = {(row["aug"], row["test_modality"]): row["dice"] for row in data["results"]}
    gain = dice["gin", "mr-t1"] - dice["none", "mr-t1"]  # the one unseen modality here
    drop = dice["none", "ct"] - dice["gin", "ct"]
    verdict = data["verdict"]
    assert verdict["gin_unseen_gain"] == pytest.approx(gain)
    assert verdict["gin_in_modality_drop"] == pytest.approx(drop)
    assert verdict["met"] == (gain >= 0.15 and drop <= 0.03)
    assert report.dice("gin", "mr-t1") == dice["gin", "mr-t1"]


def test_each_test_modality_is_scored_on_its_own_modalitys_images(tiny_report):
    """CT holds air at about -1000 HU; the MR phantoms have no negative values at all."""
    out, report, _ = tiny_report
    for row in report.results:  # phantom case ids name their modality: synth_mrt1_000
        assert row["cases"] and all(f"synth_{row['test_modality'].replace('-', '')}_" in case
                                    for case in row["cases"])
    for modality in TINY.test_modalities:
        dataset = load_dataset(out / "data" / f"test-{modality}")
        assert dataset.modality == modality
        lowest = min(float(read_volume(case.image).array.min()) for case in dataset.training)
        assert (lowest < -500) == (modality == "ct")


@pytest.mark.parametrize(("gin_mr", "gin_ct", "met"), [(0.60, 0.80, True), (0.54, 0.80, False),
                                                       (0.70, 0.76, False), (0.70, 0.78, True)])
def test_the_verdict_needs_the_unseen_gain_and_a_kept_in_modality_dice(gin_mr, gin_ct, met):
    """none: CT 0.80, MR-T1 0.40 and MR-T2 0.40; GIN must add >= 0.15 unseen and lose <= 0.03 on CT."""
    settings = CrossModalitySettings(augmentations=("none", "gin"))
    report = CrossModalityReport(settings)
    scores = {("none", "ct"): 0.80, ("none", "mr-t1"): 0.40, ("none", "mr-t2"): 0.40,
              ("gin", "ct"): gin_ct, ("gin", "mr-t1"): gin_mr, ("gin", "mr-t2"): gin_mr}
    report.results = [{"aug": aug, "test_modality": modality, "dice": value}
                      for (aug, modality), value in scores.items()]
    assert report.verdict()["met"] is met


def test_markdown_report_and_chart_are_written(tiny_report):
    out, _, _ = tiny_report
    markdown = (out / "report.md").read_text()
    assert "| augmentation | ct | mr-t1 |" in markdown
    assert "GIN against no augmentation" in markdown
    assert (out / "dice.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_each_training_reports_progress_through_the_event_stream(tiny_report):
    out, _, events = tiny_report
    jobs = {event["job"] for event in events if event["kind"] == "progress"}
    assert jobs == {"cross-modality/none", "cross-modality/gin"}
    finished = [event for event in events if event["kind"] == "finished"]
    assert [event["job"] for event in finished] == ["cross-modality/none", "cross-modality/gin"]
    assert (out / "events.jsonl").read_text().count('"kind": "progress"') == len(
        [e for e in events if e["kind"] == "progress"])


def test_settings_refuse_unknown_augmentations_and_untested_training_modality():
    with pytest.raises(ValueError, match="unknown augmentations"):
        CrossModalitySettings(augmentations=("gin", "mixup"))
    with pytest.raises(ValueError, match="also be tested"):
        CrossModalitySettings(test_modalities=("mr-t1", "mr-t2"))
