"""`fedseg synth`: writes a loadable MSD-style folder; bad arguments exit 2 with one line."""

import json

import pytest

from app.cli import main
from app.commands.synth import FILE_FORMATS, MODALITIES
from segmentation.datalist import load_dataset
from segmentation.io import read_labeled_pair
from segmentation.synth import FILE_FORMATS as SYNTH_FILE_FORMATS
from segmentation.synth import SYNTH_MODALITIES


def test_the_command_offers_exactly_the_phantom_modalities_and_formats():
    assert MODALITIES == SYNTH_MODALITIES
    assert FILE_FORMATS == SYNTH_FILE_FORMATS


def test_synth_writes_a_dataset_folder_and_reports_it(tmp_path, capsys):
    out = tmp_path / "site-a"
    code = main(["synth", "--out", str(out), "--modality", "mr-t2", "--cases", "4", "--seed", "7",
                 "--size", "32", "--dim", "2", "--test-fraction", "0.25"])
    assert code == 0
    assert "3 training and 1 test cases (mr-t2)" in capsys.readouterr().out
    index = load_dataset(out)
    assert index.modality == "mr-t2" and len(index.training) == 3 and len(index.test) == 1
    assert json.loads((out / "dataset.json").read_text())["modality"] == {"0": "T2"}
    assert sorted(p.name for p in (out / "imagesTr").iterdir()) == [
        "synth_mrt2_000.nii.gz", "synth_mrt2_001.nii.gz", "synth_mrt2_002.nii.gz"]


@pytest.mark.parametrize(
    "arguments",
    [
        ["--modality", "pet", "--cases", "2", "--seed", "0"],
        ["--modality", "ct", "--cases", "0", "--seed", "0"],
        ["--modality", "ct", "--cases", "2", "--seed", "0", "--dim", "4"],
        ["--modality", "ct", "--cases", "2", "--seed", "0", "--test-fraction", "1.5"],
        ["--modality", "ct", "--cases", "2"],
    ],
)
def test_invalid_arguments_exit_2(tmp_path, capsys, arguments):
    with pytest.raises(SystemExit) as exit_info:
        main(["synth", "--out", str(tmp_path / "x"), *arguments])
    assert exit_info.value.code == 2
    assert "fedseg synth: error:" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_settings_the_generator_refuses_exit_2_with_one_line(tmp_path, capsys):
    code = main(["synth", "--out", str(tmp_path / "x"), "--modality", "ct", "--cases", "2", "--seed", "0",
                 "--size", "8"])
    assert code == 2
    assert capsys.readouterr().err == "fedseg: error: size must be between 16 and 512 pixels, got 8\n"


def test_a_folder_that_is_not_empty_is_refused_unless_overwrite(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("keep me")
    base = ["synth", "--out", str(tmp_path), "--modality", "ct", "--cases", "2", "--seed", "0",
            "--size", "16"]
    assert main(base) == 2
    assert "not empty" in capsys.readouterr().err
    assert main([*base, "--overwrite"]) == 0
    assert (tmp_path / "notes.txt").read_text() == "keep me"
    assert len(load_dataset(tmp_path).training) == 1


def test_synth_writes_dicom_series_with_the_asked_geometry(tmp_path, capsys):
    out = tmp_path / "site-b"
    code = main(["synth", "--out", str(out), "--modality", "ct", "--cases", "2", "--seed", "3", "--dim", "3",
                 "--orientation", "ras", "--spacing", "10,12.5,20", "--fov", "500", "--format", "dicom"])
    assert code == 0
    assert "1 training and 1 test cases (ct)" in capsys.readouterr().out
    case = load_dataset(out).training[0]
    assert case.case_id == "synth_ct_000" and case.image == out / "imagesTr" / "synth_ct_000"
    image, label = read_labeled_pair(case.image, case.label)
    # 500/10 columns, 500/12.5 rows, 200/20 slices; RAS flips x and y of the identity (LPS) direction.
    assert image.shape == label.shape == (10, 40, 50)
    assert image.spacing == pytest.approx((10.0, 12.5, 20.0))
    assert image.direction == pytest.approx((-1, 0, 0, 0, -1, 0, 0, 0, 1))
    assert len(list(case.image.iterdir())) == 10


def test_the_help_names_the_geometry_options(capsys):
    with pytest.raises(SystemExit):
        main(["synth", "--help"])
    text = capsys.readouterr().out
    for option in ("--orientation", "--spacing X,Y,Z", "--fov MM", "--format {nifti,dicom}"):
        assert option in text


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--orientation", "XYZ"], "orientation must be 3 letters, one each of R/L, A/P and S/I (e.g. LPS, "
                                   "RAS, PIR), got 'XYZ'"),
        (["--orientation", "ASL", "--format", "dicom"], "orientation ASL is left-handed"),
        (["--spacing", "1,2"], "--spacing needs three sizes in mm, X,Y,Z (e.g. 0.8,0.8,2.5), got '1,2'"),
        (["--spacing", "a,b,c"], "--spacing needs three sizes in mm"),
        (["--spacing", "1,0,2"], "spacing must be three positive voxel sizes in mm"),
        (["--fov", "20"], "field of view must be between 100 and 1000 mm, got 20"),
        (["--spacing", "0.4,0.4,1"], "voxels, more than the"),
        (["--dim", "2", "--orientation", "PIR"], "2D phantom is one axial slice"),
    ],
)
def test_geometry_values_the_generator_refuses_exit_2_with_one_line(tmp_path, capsys, arguments, message):
    code = main(["synth", "--out", str(tmp_path / "x"), "--modality", "ct", "--cases", "2", "--seed", "0",
                 *arguments])
    assert code == 2
    error = capsys.readouterr().err
    assert error.startswith("fedseg: error: ") and message in error and error.count("\n") == 1
    assert not (tmp_path / "x").exists()


def test_an_unknown_format_is_an_argument_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["synth", "--out", str(tmp_path / "x"), "--modality", "ct", "--cases", "2", "--seed", "0",
              "--format", "png"])
    assert exit_info.value.code == 2
    assert "fedseg synth: error: argument --format" in capsys.readouterr().err
