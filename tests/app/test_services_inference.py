"""The Inference page's plain-Python side: finding the federation's latest global model and a site's
personalised model among this workbench's sites, describing a model by its kind and the round that made
it, and saying when a study does not fit a model (modality, voxel size, the body's extent, its tissue) as
notes that never stop segmentation.

Expected values are written out by hand from the checkpoints, plans and volumes each test makes; the
tissue check also end to end: a model planned on the demo's CT phantoms warns about slicerio's chest CT
and about none of the phantoms held out from it.
"""

import os
import re
from pathlib import Path

import numpy as np
import pytest

from app.models.model_fit import PROFILE_LEVELS, FitNote, StudyGeometry, fit_notes
from app.models.study import Study
from app.services.demo import chest_ct_files
from app.services.inference import (
    check_fit,
    describe_model,
    latest_global_model,
    latest_personalised_model,
    study_geometry,
)
from app.services.studies import load_study
from federation.demo.settings import SITE_STORAGE
from segmentation.datalist import load_dataset
from segmentation.fingerprint import fingerprint_cases
from segmentation.plan import Plan, TissueRange, make_plan
from segmentation.settings import GLOBAL_MODEL, LOCAL_MODEL, PERSONALISED_MODEL
from segmentation.synth import generate_dataset
from segmentation.volume import Volume

LABELS = {0: "background", 1: "liver", 2: "spleen"}
PLAN_2D = Plan(labels=LABELS, spatial_dims=2, target_spacing=(2.0, 2.0, 5.0), patch_size=(32, 32))
PLAN_3D = Plan(labels=LABELS, spatial_dims=3, target_spacing=(1.0, 1.0, 2.0), patch_size=(32, 64, 64))


def write_model(path: Path, round: int = 0, epoch: int = 0, modality: str = "unknown",
                plan: Plan = PLAN_2D, kind: str = LOCAL_MODEL) -> Path:
    """A tiny untrained 2D U-Net checkpoint (PLAN_2D unless given) of this kind that names the federated
    round that made it."""
    from segmentation.checkpoint import Checkpoint, save_checkpoint
    from segmentation.settings import NetworkConfig

    network = NetworkConfig(out_channels=len(plan.labels), channels=(8, 16))
    save_checkpoint(Checkpoint(network, plan, network.build().state_dict(), augmentation="gin",
                               train_modality=modality, epoch=epoch, round=round, kind=kind), path)
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

    path = aged(write_model(folder / "global-model.pt", round=rounds[-1] if rounds else 0, kind=GLOBAL_MODEL),
                seconds_ago)
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
    path = write_model(workspace / "federation" / "A" / "global-model.pt", round=4,  # an earlier version's
                       kind=GLOBAL_MODEL)
    assert (latest_global_model(workspace).path, latest_global_model(workspace).round) == (path, None)
    assert latest_personalised_model(workspace) is None  # a global model is not a personalised one
    path = write_model(workspace / "federation" / "A" / "personalised-model.pt", round=4, modality="ct",
                       kind=PERSONALISED_MODEL)  # its events lost: the site's events name no such model
    found = latest_personalised_model(workspace)
    assert (found.kind, found.path, found.site, found.round) == (PERSONALISED_MODEL, path, "A", None)
    assert found.describe() == ("site A's personalised model (the final global model fine-tuned on its own "
                                "data)")


def personalise(folder: Path, server_round: int, seconds_ago: int) -> Path:
    """What a site adds after the federation's last round: personalised-model.pt beside its global model,
    fine-tuned on its own CT data, and the "personalised-model" event after its fine-tuning's own events."""
    from segmentation.events import EventWriter

    path = aged(write_model(folder / "personalised-model.pt", round=server_round, epoch=server_round,
                            modality="ct", kind=PERSONALISED_MODEL), seconds_ago)
    with EventWriter(folder / "events.jsonl", job="federation") as events:
        events.emit("started", round=server_round, epochs=2, model="personalised")
        events.emit("personalised-model", round=server_round, epochs=2, metrics={"dice": 0.5})
    return path


def test_the_latest_personalised_model_is_the_newest_a_site_kept_beside_its_global_model(tmp_path):
    workspace = tmp_path / "workspace"
    joined_site = workspace / "federation" / "CT-Hospital"
    joined_global = keep(joined_site, [1, 2], seconds_ago=60)
    joined = personalise(joined_site, 2, seconds_ago=50)
    demo_site = workspace / "demo-federation" / "federation" / "sites" / "ct-site"
    demo_global = keep(demo_site, [1, 2, 3], seconds_ago=120)
    demo = personalise(demo_site, 3, seconds_ago=110)
    personalise(workspace / "runs" / "old", 9, seconds_ago=0)  # not a site's folder

    found = latest_personalised_model(workspace)
    assert (found.kind, found.path, found.site, found.round) == (PERSONALISED_MODEL, joined, "CT-Hospital", 2)
    assert latest_global_model(workspace).path == joined_global  # the global model stays found beside it
    aged(demo, 30)
    found = latest_personalised_model(workspace)
    assert (found.path, found.site, found.round) == (demo, "ct-site", 3)
    assert found.describe() == ("site ct-site's personalised model (round 3's global model fine-tuned on its "
                                "own data)")
    assert latest_global_model(workspace).path == joined_global  # each kind by its own files' age
    aged(demo_global, 20)
    found = latest_global_model(workspace)
    assert (found.kind, found.path, found.round) == (GLOBAL_MODEL, demo_global, 3)


def test_a_model_is_described_by_its_kind_and_the_round_that_made_it(tmp_path):
    federated = describe_model(write_model(tmp_path / "global-model.pt", round=3, epoch=6,
                                           kind=GLOBAL_MODEL)).describe()
    assert "federated global model, round 3" in federated and "epoch" not in federated
    assert "2 labels (liver, spleen)" in federated and "trained with gin augmentation" in federated
    assert "personalised" not in federated
    local = describe_model(write_model(tmp_path / "model.pt", epoch=4, modality="ct,mr-t1")).describe()
    assert "epoch 4" in local and "round" not in local and "trained on CT and MR T1" in local
    personalised = describe_model(write_model(tmp_path / "personalised-model.pt", round=3, epoch=6,
                                              modality="mr-t1", kind=PERSONALISED_MODEL)).describe()
    assert personalised == ("2D U-Net, personalised model (round 3's global model fine-tuned on MR T1 data), "
                            "trained with gin augmentation; 2 labels (liver, spleen); plan 2D, 2 x 2 mm "
                            "in-plane, slices as stored, patch 32 x 32")
    assert "federated global model" not in personalised and "epoch" not in personalised


def test_a_global_model_saved_before_checkpoints_named_their_kind_is_still_described_as_one(tmp_path):
    import torch

    path = write_model(tmp_path / "global-model.pt", round=2, epoch=4, kind=GLOBAL_MODEL)
    payload = torch.load(path, weights_only=True)
    del payload["kind"]  # as the earlier version saved a site's global model
    torch.save(payload, path)
    assert "federated global model, round 2" in describe_model(path).describe()


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


# -- does the study show tissue like the training studies'? -----------------------------------------------

CT_TISSUE = TissueRange((-850, -150, -80, 20, 80), (-800, -100, -50, 40, 90))


def tissue_geometry(modality: str, hounsfield=(), window=()) -> StudyGeometry:
    """A study like PLAN_2D's in geometry, whose body has these percentiles (at PROFILE_LEVELS)."""
    tissue = {scale: tuple(float(v) for v in profile)
              for scale, profile in (("HU", hounsfield), ("window", window)) if len(profile)}
    return StudyGeometry(modality, (2.0, 2.0, 5.0), (300.0, 200.0, 150.0), tissue)


def test_a_body_whose_tissue_no_training_study_had_is_a_warning_in_hounsfield_units():
    plan = Plan(LABELS, 2, (2.0, 2.0, 5.0), (32, 32), tissue={"ct": CT_TISSUE})
    # Within every quantile's range: the training studies' own mix.
    alike = np.interp(PROFILE_LEVELS, [0, 5, 25, 50, 75, 95, 100], [-1000, -825, -125, -65, 30, 85, 300])
    assert fit_notes("ct", "gin", plan, tissue_geometry("ct", alike)) == ()
    # Evenly spread from -1000 to 100 HU: 850 of 1100 HU (77%) lie below -150, the low end of the range of
    # the 25% quantile, where the training studies had at most 25% of their bodies.
    spread = np.linspace(-1000, 100, 101)
    (warning,) = fit_notes("ct", "gin", plan, tissue_geometry("ct", spread))
    assert warning == FitNote("this study's tissue looks unlike the training studies' (77% of its body is "
                              "below -150 HU; the training studies had at most 25% there): it may show "
                              "another body region; check the labels it names", warning=True)
    # An untagged study is judged by the plan's only modality; one of another modality is not judged (the
    # modality note says it), nor is an untagged study when the plan knows several.
    assert fit_notes("ct", "gin", plan, tissue_geometry("unknown", spread)) == (warning,)
    (note,) = fit_notes("ct", "gin", plan, tissue_geometry("mr-t1", spread))
    assert not note.warning
    two = Plan(LABELS, 2, (2.0, 2.0, 5.0), (32, 32), tissue={"ct": CT_TISSUE, "mr-t1": CT_TISSUE})
    assert fit_notes("ct,mr-t1", "gin", two, tissue_geometry("unknown", spread)) == ()
    assert fit_notes("ct", "gin", PLAN_2D, tissue_geometry("ct", spread)) == ()  # a plan made before ranges


def test_other_modalities_are_judged_on_the_bodys_own_intensity_range():
    tissue = TissueRange((0.05, 0.3, 0.5, 0.65, 0.85), (0.06, 0.4, 0.6, 0.75, 0.9))
    plan = Plan(LABELS, 2, (2.0, 2.0, 5.0), (32, 32), tissue={"mr-t1": tissue})
    even = np.linspace(0.0, 1.0, 101)  # at most 5 points beyond any quantile's range
    assert fit_notes("mr-t1", "gin", plan, tissue_geometry("mr-t1", hounsfield=even * 900, window=even)) == ()
    # Mostly dark: the share below 0.3 is the cube root of 0.3, 67%, where the training studies had 25%.
    dark = even ** 3
    (warning,) = fit_notes("mr-t1", "gin", plan, tissue_geometry("mr-t1", hounsfield=even * 900, window=dark))
    assert "(67% of its body is darker than 0.30 of its own intensity range; the training studies had at " \
           "most 25% there)" in warning.text


@pytest.fixture(scope="module")
def phantom_model(tmp_path_factory) -> Path:
    """A model planned on the demo CT site's phantoms (stored as that site stores them), 3 training cases."""
    root = tmp_path_factory.mktemp("phantoms")
    generate_dataset(root / "train", "ct", 4, seed=1, size=32, geometry=SITE_STORAGE["ct"].geometry(32))
    dataset = load_dataset(root / "train")
    plan = make_plan(fingerprint_cases(dataset.training, dataset.labels), 2, (8, 16), batch_size=4)
    return write_model(root / "model.pt", modality="ct", plan=plan)


def test_held_out_phantoms_of_every_demo_sites_storage_fit_the_model(phantom_model, tmp_path):
    model = describe_model(phantom_model)
    for site, storage in SITE_STORAGE.items():
        generate_dataset(tmp_path / site, "ct", 3, seed=7, size=32, geometry=storage.geometry(32))
        held_out = load_dataset(tmp_path / site)
        for case in held_out.training + held_out.test:
            study = load_study(case.image)  # DICOM says CT; the NIfTI files do not say
            assert check_fit(model, study) == (), (site, case.case_id)


def test_the_chest_ct_gets_a_tissue_warning_from_an_abdominal_phantom_model(phantom_model, tmp_path):
    model = describe_model(phantom_model)
    chest = load_study(chest_ct_files()[0])
    assert chest.modality == "unknown"  # the NRRD does not say: judged by the model's only modality
    (warning,) = [note for note in check_fit(model, chest) if "tissue" in note.text]
    assert warning.warning and "it may show another body region; check the labels it names" in warning.text
    share, level, allowed = re.search(r"\((\d+)% of its body is below (-?\d+) HU; the training studies had "
                                      r"at most (\d+)% there\)", warning.text).groups()
    # The phantoms' lowest 5% is lung (about -850 HU); half the chest's scan lies below it. Its body is
    # every voxel the scanner measured (-3024 HU pads the corners outside its circle).
    assert -900 < int(level) < -800 and allowed == "5"
    array = np.asarray(chest.image.array)
    measured = array[array > -3024]
    assert int(share) == pytest.approx(100 * np.mean(measured < int(level)), abs=1.5)

    generate_dataset(tmp_path / "mr", "mr-t1", 2, seed=2, size=32)  # the demo's MR T1 site
    mr = load_study(load_dataset(tmp_path / "mr").training[0].image).with_modality("mr-t1")
    (note,) = check_fit(model, mr)
    assert not note.warning and "MR T1" in note.text  # another modality: the note says it, no tissue check


def test_checkpoints_made_before_tissue_ranges_were_kept_still_load_and_check(tmp_path):
    import torch

    path = write_model(tmp_path / "old.pt", epoch=2, modality="ct",
                       plan=Plan(LABELS, 2, (2.0, 2.0, 5.0), (32, 32), tissue={"ct": CT_TISSUE}))
    payload = torch.load(path, weights_only=True)
    del payload["plan"]["tissue"]  # as format 2 checkpoints of the earlier version hold their plans
    torch.save(payload, path)
    model = describe_model(path)
    assert model.plan.tissue is None and model.plan == PLAN_2D
    array = np.full((3, 40, 40), -1000.0, np.float32)
    array[:, 5:35, 5:35] = -900.0  # all lung-like: unlike CT_TISSUE, but the old plan cannot say
    study = Study(Volume(array, spacing=(2.0, 2.0, 5.0), modality="ct"), Path("x.nii.gz"), "x")
    assert check_fit(model, study) == ()
