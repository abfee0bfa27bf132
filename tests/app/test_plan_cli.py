"""`fedseg plan`: two datasets stored differently give one plan by nnU-Net's rule; bad input exits 2."""

import json

import pytest

from app.cli import main
from segmentation.checkpoint import load_checkpoint
from segmentation.datalist import load_dataset, write_dataset_json
from segmentation.plan import read_plan
from segmentation.synth import PhantomGeometry, generate_dataset


@pytest.fixture(scope="module")
def sites(tmp_path_factory):
    """A: 2 training phantoms stored LPS at 12.5 x 12.5 x 25 mm; B: 3 stored as sagittal slices (PIR)
    at 10 x 10 x 20 mm. Both cover 400 mm in-plane."""
    root = tmp_path_factory.mktemp("sites")
    a = generate_dataset(root / "a", "ct", cases=3, seed=0, size=32, test_fraction=0.34)
    b = generate_dataset(root / "b", "mr-t1", cases=4, seed=1, size=32, test_fraction=0.25,
                         geometry=PhantomGeometry(orientation="PIR", spacing=(10.0, 10.0, 20.0)))
    assert (len(a.training), len(b.training)) == (2, 3)
    return a, b


def test_the_plan_of_two_sites_is_the_median_of_their_five_cases(sites, tmp_path, capsys):
    a, b = sites
    out = tmp_path / "plan.json"
    assert main(["plan", "--data", str(a.root), "--data", str(b.root), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "2 labelled cases" in printed and "stored LPS" in printed and "stored PIR" in printed
    plan = read_plan(out)
    # Spacings x: 12.5, 12.5, 10, 10, 10 -> median 10; z: 25, 25, 20, 20, 20 -> 20.
    assert plan.target_spacing == (10.0, 10.0, 20.0)
    # 400 mm at 10 mm is 40 pixels, already a multiple of 8 (the default U-Net's four levels).
    assert plan.patch_size == (40, 40) and plan.spatial_dims == 2 and plan.labels == a.labels
    fingerprint = json.loads(out.read_text())["fingerprint"]
    assert sorted(case["orientation"] for case in fingerprint["cases"]) == ["LPS", "LPS", "PIR", "PIR", "PIR"]
    assert set(fingerprint["intensities"]) == {"ct", "mr-t1"}

    run = tmp_path / "run"
    assert main(["train", "--data", str(b.root), "--plan", str(out), "--epochs", "1", "--out", str(run),
                 "--channels", "4,8,16,32", "--cache", str(tmp_path / "cache")]) == 0
    assert load_checkpoint(run / "model.pt").plan == plan


def test_3d_overrides_and_a_memory_budget_shape_the_patch(sites, tmp_path):
    a, _ = sites
    out = tmp_path / "plan.json"
    assert main(["plan", "--data", str(a.root), "--out", str(out), "--dim", "3", "--spacing", "5,5,25"]) == 0
    plan = read_plan(out)
    # 8 slices of 25 mm; in-plane the body's box, within 400 mm at 5 mm (80 pixels), in steps of 8. The
    # abdomen is wider from left to right than from front to back.
    depth, rows, columns = plan.patch_size
    assert plan.target_spacing == (5.0, 5.0, 25.0) and depth == 8
    assert rows % 8 == 0 and columns % 8 == 0 and rows < columns <= 80
    assert plan.overridden == ("target_spacing",)
    small = tmp_path / "small.json"
    assert main(["plan", "--data", str(a.root), "--out", str(small), "--dim", "3", "--spacing", "5,5,25",
                 "--memory-budget-mb", "50"]) == 0
    assert max(read_plan(small).patch_size) < 80


def test_bad_input_exits_2_and_writes_nothing(sites, tmp_path, capsys):
    a, _ = sites
    out = tmp_path / "plan.json"
    out.write_text("mine")
    assert main(["plan", "--data", str(a.root), "--out", str(out)]) == 2
    assert "--force" in capsys.readouterr().err and out.read_text() == "mine"
    assert main(["plan", "--data", str(a.root), "--out", str(out), "--force"]) == 0
    other = tmp_path / "other"
    for folder, source in (("images", a.training[0].image), ("labels", a.training[0].label)):
        (other / folder).mkdir(parents=True)
        (other / folder / "c.nii.gz").write_bytes(source.read_bytes())
    write_dataset_json(other, name="other", modality="ct", labels={0: "background", 1: "heart"},
                       training=[("images/c.nii.gz", "labels/c.nii.gz")], test=[])
    load_dataset(other)
    for args, message in (
        (["--data", str(a.root), "--data", str(other)], "different labels"),
        (["--data", str(a.root), "--spacing", "1,1"], "--spacing needs 3 positive values"),
        (["--data", str(a.root), "--patch-size", "33,32"], "multiples of 8"),
        (["--data", str(tmp_path / "nowhere")], "does not exist"),
    ):
        target = tmp_path / "new.json"
        assert main(["plan", *args, "--out", str(target)]) == 2
        err = capsys.readouterr().err
        assert err.startswith("fedseg: error:") and message in err and err.count("\n") == 1
        assert not target.exists()
