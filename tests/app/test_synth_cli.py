"""`fedseg synth`: writes a loadable MSD-style folder; bad arguments exit 2 with one line."""

import json

import pytest

from app.cli import main
from app.commands.synth import MODALITIES
from segmentation.datalist import load_dataset
from segmentation.synth import SYNTH_MODALITIES


def test_the_command_offers_exactly_the_phantom_modalities():
    assert MODALITIES == SYNTH_MODALITIES


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
