"""Volume, events, network config and checkpoints: the contracts every other module builds on."""

import json

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from segmentation.body import MARGIN
from segmentation.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from segmentation.errors import CheckpointError
from segmentation.events import EventWriter, read_events
from segmentation.plan import Plan
from segmentation.preprocessing import prepare_study
from segmentation.settings import NetworkConfig
from segmentation.volume import Volume, normalize_modality


def test_volume_round_trips_through_simpleitk_without_reordering_axes():
    array = np.arange(2 * 3 * 4, dtype=np.int16).reshape(2, 3, 4)
    direction = (0.0, 1.0, 0.0, -1.0, 0.0, 0.0, 0.0, 0.0, 1.0)
    volume = Volume(array, spacing=(0.5, 0.7, 2.5), origin=(1, 2, 3), direction=direction, modality="CT")
    image = volume.to_sitk()
    assert image.GetSize() == (4, 3, 2)
    assert image.GetSpacing() == (0.5, 0.7, 2.5)
    back = Volume.from_sitk(image, modality="ct")
    np.testing.assert_array_equal(back.array, array)
    assert back.direction == direction
    assert back.modality == "ct"


def test_volume_reports_each_geometry_difference():
    a = Volume(np.zeros((2, 3, 4)), spacing=(1, 1, 2))
    b = Volume(np.zeros((2, 3, 5)), spacing=(1, 1, 3))
    differences = a.geometry_differences(b)
    assert any(d.startswith("size") for d in differences)
    assert any(d.startswith("spacing") and "(1, 1, 2) vs (1, 1, 3)" in d for d in differences)
    assert a.geometry_differences(a) == []


def test_volume_rejects_non_3d_arrays_and_2d_images_become_one_slice():
    with pytest.raises(ValueError, match="3D"):
        Volume(np.zeros((3, 4)))
    assert Volume.from_sitk(sitk.Image(5, 4, sitk.sitkFloat32)).shape == (1, 4, 5)


@pytest.mark.parametrize(
    ("tag", "expected"), [("CT", "ct"), ("MR", "mr"), ("t2", "mr-t2"), ("MR_T1", "mr-t1"), ("PT", "unknown")]
)
def test_modality_tags_are_normalized(tag, expected):
    assert normalize_modality(tag) == expected


def test_event_writer_writes_strict_json_lines_and_feeds_listeners(tmp_path):
    seen = []
    path = tmp_path / "events.jsonl"
    with EventWriter(path, job="train", listeners=(seen.append,)) as events:
        events.emit("started", epochs=2)
        events.emit("epoch", epoch=1, loss=float("nan"), metrics={"dice": np.float32(0.5)})
    lines = path.read_text().splitlines()
    assert [json.loads(line)["kind"] for line in lines] == ["started", "epoch"]
    epoch = json.loads(lines[1])
    assert epoch["loss"] is None and epoch["metrics"]["dice"] == pytest.approx(0.5)
    assert seen[0]["job"] == "train" and len(seen) == 2
    with pytest.raises(ValueError, match="unknown event kind"):
        EventWriter(None, job="x").emit("exploded")


def test_read_events_skips_a_half_written_last_line(tmp_path):
    path = tmp_path / "events.jsonl"
    path.write_text('{"kind": "started", "time": 1, "job": "j"}\n{"kind": "progr')
    assert [event["kind"] for event in read_events(path)] == ["started"]


def test_network_config_validates_and_builds_fedgin_unet():
    config = NetworkConfig(out_channels=5)
    assert config.channels == (32, 64, 128, 256) and config.size_multiple == 8
    output = config.build()(torch.zeros(2, 1, 32, 32))
    assert output.shape == (2, 5, 32, 32)
    assert NetworkConfig.from_dict(config.to_dict()) == config
    for bad in ({"spatial_dims": 4}, {"out_channels": 1}, {"channels": (8,)}, {"norm": "group"}):
        with pytest.raises(ValueError):
            NetworkConfig(**bad)


def test_a_wider_field_of_view_prepares_to_the_same_normalized_body():
    """A body (values 0..999) in air (-1000), once with 5 and once with 60 rows of air above and below:
    both are cropped to the body and windowed from it alike, so the network sees the same input."""
    plan = Plan(labels={0: "background", 1: "x"}, spatial_dims=2, target_spacing=(1, 1, 1), patch_size=(8, 8),
                lower_percentile=0.0, upper_percentile=100.0)
    body = np.arange(1000, dtype=np.float32).reshape(1, 10, 100).repeat(3, axis=0)
    scans = [np.pad(body, ((0, 0), (air, air), (0, 0)), constant_values=-1000.0) for air in (5, 60)]
    prepared = [prepare_study(Volume(scan), plan) for scan in scans]
    np.testing.assert_array_equal(prepared[0].image, prepared[1].image)
    assert prepared[0].image.shape == (3, 10 + 2 * MARGIN, 100)
    assert prepared[0].image.max() == 1.0 and np.all(prepared[0].image[:, MARGIN:-MARGIN] > 0.0)


def _checkpoint() -> Checkpoint:
    network = NetworkConfig(out_channels=3, channels=(4, 8))
    plan = Plan(labels={0: "background", 1: "liver", 2: "spleen"}, spatial_dims=2,
                target_spacing=(0.7, 0.7, 2.5), patch_size=(16, 16))
    return Checkpoint(
        network=network, plan=plan, state_dict=network.build().state_dict(),
        augmentation="gin", train_modality="ct", epoch=3, history=[{"epoch": 3, "loss": 0.5}],
    )


def test_checkpoint_round_trips_and_rebuilds_the_model(tmp_path):
    original = _checkpoint()
    save_checkpoint(original, tmp_path / "model.pt")
    loaded = load_checkpoint(tmp_path / "model.pt")
    assert loaded.plan == original.plan and loaded.network == original.network
    assert loaded.labels == {0: "background", 1: "liver", 2: "spleen"}
    assert loaded.epoch == 3 and loaded.augmentation == "gin" and loaded.history == original.history
    model = loaded.build_model()
    for key, value in original.state_dict.items():
        torch.testing.assert_close(model.state_dict()[key], value)
    assert [p.name for p in tmp_path.iterdir()] == ["model.pt"]  # no temporary file left behind


def test_a_checkpoint_from_before_plans_is_refused_with_what_to_do(tmp_path):
    path = tmp_path / "old.pt"
    torch.save({"format": "fedseg-checkpoint/1", "preprocessing": {"image_size": [96, 96]}}, path)
    with pytest.raises(CheckpointError, match="old.pt.*without a plan.*train it again"):
        load_checkpoint(path)


@pytest.mark.parametrize("content", [b"", b"not a checkpoint at all", None])
def test_bad_checkpoints_raise_checkpoint_error(tmp_path, content):
    path = tmp_path / "model.pt"
    if content is None:
        torch.save({"format": "something-else"}, path)
    else:
        path.write_bytes(content)
    with pytest.raises(CheckpointError, match="model.pt"):
        load_checkpoint(path)
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        load_checkpoint(tmp_path / "missing.pt")
