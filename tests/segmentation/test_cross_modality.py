"""The centralized cross-modality experiment end to end, at a size that runs in seconds."""

import json

import pytest

from segmentation.cross_modality import CrossModalitySettings, run_cross_modality

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
    assert data["verdict"]["required_unseen_gain"] == pytest.approx(0.15)
    assert data["verdict"]["met"] in (True, False)
    assert report.dice("gin", "mr-t1") == next(
        r["dice"] for r in data["results"] if r["aug"] == "gin" and r["test_modality"] == "mr-t1")


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
