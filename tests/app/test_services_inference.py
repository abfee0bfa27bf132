"""The Inference page's plain-Python side: finding the federation's latest global model among this
workbench's sites, describing a global model by the round that made it, and saying when a study does not
fit a model (modality, voxel size, the body's extent) as notes that never stop segmentation.

Expected values are written out by hand from the checkpoints, plans and volumes each test makes.
"""

import os
from pathlib import Path

import numpy as np
import pytest

from app.models.model_fit import FitNote, StudyGeometry, fit_notes
from app.models.study import Study
from app.services.inference import check_fit, describe_model, latest_global_model, study_geometry
from segmentation.plan import Plan
from segmentation.volume import Volume

LABELS = {0: "background", 1: "liver", 2: "spleen"}
PLAN_2D = Plan(labels=LABELS, spatial_dims=2, target_spacing=(2.0, 2.0, 5.0), patch_size=(32, 32))
PLAN_3D = Plan(labels=LABELS, spatial_dims=3, target_spacing=(1.0, 1.0, 2.0), patch_size=(32, 64, 64))


def write_model(path: Path, round: int = 0, epoch: int = 0, modality: str = "unknown") -> Path:
    """A tiny untrained 2D U-Net checkpoint (PLAN_2D) that names the federated round that made it."""
    from segmentation.checkpoint import Checkpoint, save_checkpoint
    from segmentation.settings import NetworkConfig

    network = NetworkConfig(out_channels=3, channels=(8, 16))
    save_checkpoint(Checkpoint(network, PLAN_2D, network.build().state_dict(), augmentation="gin",
                               train_modality=modality, epoch=epoch, round=round), path)
    return path


def aged(path: Path, seconds_ago: int) -> Path:
    """Set the file's modification time, so "latest" does not depend on how fast the test wrote."""
    stamp = 1_700_000_000 - seconds_ago
    os.utime(path, (stamp, stamp))
    return path


# -- the latest global model ---------------------------------------------------------------------------

def keep(folder: Path, rounds: list[int], seconds_ago: int) -> Path:
    """A site folder as site_work leaves it: global-model.pt (of the last round) and its events, one
    "global-model" event per round it saved, among the site's other events."""
    from segmentation.events import EventWriter

    path = aged(write_model(folder / "global-model.pt", round=rounds[-1] if rounds else 0), seconds_ago)
    with EventWriter(folder / "events.jsonl", job="federation") as events:
        for server_round in rounds:
            events.emit("started", round=server_round + 1, epochs=1)
            events.emit("global-model", round=server_round)
            events.emit("finished", round=server_round + 1, metrics={})
    return path


def test_the_latest_global_model_is_the_newest_file_any_site_kept_with_its_round(tmp_path):
    workspace = tmp_path / "workspace"
    joined = keep(workspace / "federation" / "CT-Hospital", [1, 2], seconds_ago=60)
    demo_site = workspace / "demo-federation" / "federation" / "sites" / "ct-site"
    demo = keep(demo_site, [1, 2, 3], seconds_ago=120)
    keep(workspace / "runs" / "old", [9], seconds_ago=0)  # not a site's folder

    found = latest_global_model(workspace)
    assert (found.path, found.site, found.round) == (joined, "CT-Hospital", 2)
    aged(demo, 30)
    found = latest_global_model(workspace)
    assert (found.path, found.site, found.round) == (demo, "ct-site", 3)
    assert found.describe() == "the global model of round 3, as site ct-site keeps it"


def test_without_a_site_model_none_is_found_and_without_events_its_round_is_unknown(tmp_path):
    workspace = tmp_path / "workspace"
    assert latest_global_model(workspace) is None  # no workspace folder yet
    (workspace / "federation" / "A").mkdir(parents=True)
    assert latest_global_model(workspace) is None
    path = write_model(workspace / "federation" / "A" / "global-model.pt", round=4)  # an earlier version's
    assert (latest_global_model(workspace).path, latest_global_model(workspace).round) == (path, None)


def test_a_global_model_is_described_by_the_round_that_made_it(tmp_path):
    federated = describe_model(write_model(tmp_path / "global-model.pt", round=3, epoch=6)).describe()
    assert "federated global model, round 3" in federated and "epoch" not in federated
    assert "2 labels (liver, spleen)" in federated and "trained with gin augmentation" in federated
    local = describe_model(write_model(tmp_path / "model.pt", epoch=4, modality="ct,mr-t1")).describe()
    assert "epoch 4" in local and "round" not in local and "trained on CT and MR T1" in local


# -- does the study fit the model? ------------------------------------------------------------------------

def geometry(modality="ct", spacing=(2.0, 2.0, 5.0), extent=(300.0, 200.0, 150.0)) -> StudyGeometry:
    return StudyGeometry(modality, spacing, extent)


def test_a_study_like_the_models_gets_no_note():
    assert fit_notes("ct", "gin", PLAN_2D, geometry()) == ()
    assert fit_notes("mr", "none", PLAN_2D, geometry("mr-t2")) == ()  # "mr" covers every MR sequence
    assert fit_notes("ct,mr-t1", "gin", PLAN_2D, geometry("mr-t1")) == ()
    assert fit_notes("unknown", "none", PLAN_2D, geometry("mr-t1")) == ()  # the model does not say
    assert fit_notes("ct", "none", PLAN_2D, geometry("unknown")) == ()  # nor does the study


def test_another_modality_is_a_note_worded_by_the_augmentation():
    (note,) = fit_notes("ct", "gin", PLAN_2D, geometry("mr-t1"))
    assert not note.warning and note.line().startswith("Note: ")
    assert "CT" in note.text and "MR T1" in note.text and "gin augmentation" in note.text
    (note,) = fit_notes("ct", "none", PLAN_2D, geometry("mr-t2"))
    assert not note.warning and "without cross-modality augmentation" in note.text
    (note,) = fit_notes("mr-t1", "gin", PLAN_2D, geometry("mr-t2"))  # MR sequences differ from each other
    assert not note.warning and "MR T2" in note.text


def test_voxels_far_finer_or_coarser_than_the_plans_are_a_warning_on_the_planned_axes_only():
    (warning,) = fit_notes("ct", "gin", PLAN_2D, geometry(spacing=(0.5, 0.6, 5.0)))
    assert warning == FitNote("the study's voxels are 0.5 x 0.6 mm along x, y, over 3 times finer than "
                              "the model's 2 x 2 mm; a scan this unlike its studies may be segmented poorly",
                              warning=True)
    (warning,) = fit_notes("ct", "gin", PLAN_2D, geometry(spacing=(2.0, 7.0, 5.0)))
    assert warning.warning and "7 mm along y" in warning.text and "coarser" in warning.text
    # 3 times exactly is still alike; a 2D plan keeps each study's own slices, so z is not judged.
    assert fit_notes("ct", "gin", PLAN_2D, geometry(spacing=(6.0, 2 / 3, 50.0))) == ()
    (warning,) = fit_notes("ct", "gin", PLAN_3D, geometry(spacing=(1.0, 1.0, 7.0)))  # 3D: z counts
    assert "7 mm along z" in warning.text


def test_a_body_far_smaller_than_the_models_window_is_a_warning():
    # PLAN_2D's window: 32 pixels of 2 mm = 64 mm along x and y; a third of it is 21.3 mm.
    (warning,) = fit_notes("ct", "gin", PLAN_2D, geometry(extent=(20.0, 22.0, 5.0)))
    assert warning.warning and "spans 20 mm along x," in warning.text and "(64 mm)" in warning.text
    assert fit_notes("ct", "gin", PLAN_2D, geometry(extent=(22.0, 900.0, 5.0))) == ()  # larger: not judged
    # PLAN_3D's window along z: 32 slices of 2 mm = 64 mm.
    (warning,) = fit_notes("ct", "gin", PLAN_3D, geometry(spacing=(1.0, 1.0, 2.0), extent=(300, 300, 20)))
    assert "along z" in warning.text
    overridden = Plan(labels=LABELS, spatial_dims=2, target_spacing=(2.0, 2.0, 5.0), patch_size=(32, 32),
                      overridden=("patch_size",))
    assert fit_notes("ct", "gin", overridden, geometry(extent=(20.0, 22.0, 5.0))) == ()


def test_the_study_geometry_is_its_bodys_box_along_the_canonical_axes():
    array = np.zeros((10, 40, 50), np.float32)  # (z, y, x)
    array[3:7, 10:20, 5:45] = 100.0  # the body: 4 slices, 10 rows, 40 columns
    study = Study(Volume(array, spacing=(0.5, 1.0, 3.0), modality="mr-t1"), Path("b.nii.gz"), "b")
    found = study_geometry(study)
    assert (found.modality, found.spacing) == ("mr-t1", (0.5, 1.0, 3.0))
    # The box keeps 2 voxels to spare on every side (segmentation.body.MARGIN).
    assert found.body_extent == pytest.approx(((40 + 4) * 0.5, (10 + 4) * 1.0, (4 + 4) * 3.0))

    # Stored sagittally: the array's x axis runs along the patient's y, its y along z, its z along x.
    sagittal = (0.0, 0.0, 1.0, 1.0, 0.0, 0.0, 0.0, 1.0, 0.0)
    noise = np.random.default_rng(0).normal(size=(10, 40, 50)).astype(np.float32)  # all body, no box
    study = Study(Volume(noise, spacing=(0.5, 1.0, 3.0), direction=sagittal), Path("s.nii.gz"), "s")
    found = study_geometry(study)
    assert found.spacing == (3.0, 0.5, 1.0)
    assert found.body_extent == pytest.approx((10 * 3.0, 50 * 0.5, 40 * 1.0))


def test_check_fit_reads_the_model_and_measures_the_study(tmp_path):
    model = describe_model(write_model(tmp_path / "model.pt", epoch=1, modality="ct"))
    array = np.zeros((3, 40, 40), np.float32)
    array[:, 10:30, 10:30] = 50.0
    study = Study(Volume(array, spacing=(0.25, 0.25, 5.0), modality="mr-t2"), Path("x.nii.gz"), "x")
    notes = check_fit(model, study)
    assert [note.warning for note in notes] == [False, True, True]  # modality, voxels, the body's extent
    assert "MR T2" in notes[0].text and "0.25 x 0.25 mm along x, y" in notes[1].text
    assert "spans 6 x 6 mm along x, y" in notes[2].text  # (20 + 2 x 2 spare voxels) x 0.25 mm
