"""`fedseg inspect`: exit codes, text and JSON output on real DICOM, NRRD and Slicer files."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
import slicerio
from pydicom.data import get_testdata_file

from app.cli import main

SLICERIO_DATA = Path(slicerio.__file__).parent / "data"


def pydicom_file(name: str) -> Path:
    return Path(get_testdata_file(name, download=False))


@pytest.fixture
def ct_and_mr_folder(tmp_path) -> Path:
    """pydicom's CT_small and MR_small: two one-slice series with patient names in their headers."""
    folder = tmp_path / "study"
    folder.mkdir()
    shutil.copy(pydicom_file("CT_small.dcm"), folder / "ct.dcm")
    shutil.copy(pydicom_file("MR_small.dcm"), folder / "mr.dcm")
    return folder


def gapped_ct_series(folder: Path) -> Path:
    """Three copies of CT_small at heights 0, 5 and 15 mm: one slice is missing."""
    folder.mkdir()
    for index, height in enumerate((0.0, 5.0, 15.0)):
        dataset = pydicom.dcmread(pydicom_file("CT_small.dcm"))
        dataset.ImagePositionPatient = [0.0, 0.0, height]
        dataset.SOPInstanceUID = pydicom.uid.generate_uid(entropy_srcs=["gap", str(index)])
        dataset.save_as(folder / f"{index}.dcm")
    return folder


def run_inspect(capsys, *args: str) -> tuple[int, str, str]:
    code = main(["inspect", *map(str, args)])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_folder_with_two_series_lists_both_without_patient_identity(capsys, ct_and_mr_folder):
    code, out, err = run_inspect(capsys, ct_and_mr_folder)
    assert code == 0 and err == ""
    assert "DICOM folder, 2 image series" in out
    for uid_source in ("CT_small.dcm", "MR_small.dcm"):
        assert pydicom.dcmread(pydicom_file(uid_source)).SeriesInstanceUID in out
    assert "128 x 128 x 1 voxels (x, y, z)" in out and "64 x 64 x 1 voxels" in out
    assert "modality     ct" in out and "modality     mr" in out
    for name in ("CT_small.dcm", "MR_small.dcm"):
        dataset = pydicom.dcmread(pydicom_file(name))
        assert str(dataset.PatientName) not in out and str(dataset.PatientID) not in out
        assert "CompressedSamples" not in out


def test_json_output_for_one_chosen_series(capsys, ct_and_mr_folder):
    mr_uid = str(pydicom.dcmread(pydicom_file("MR_small.dcm")).SeriesInstanceUID)
    code, out, _ = run_inspect(capsys, ct_and_mr_folder, "--series", mr_uid, "--json")
    report = json.loads(out)
    assert code == 0 and report["format"] == "DICOM folder"
    [volume] = report["volumes"]
    assert volume["series_uid"] == mr_uid and volume["modality"] == "mr" and volume["num_slices"] == 1
    assert volume["size"] == [64, 64, 1] and volume["spacing"] == pytest.approx([0.3125, 0.3125, 0.8])
    assert volume["error"] is None


def test_unknown_series_is_exit_2_with_the_series_listed(capsys, ct_and_mr_folder):
    code, out, err = run_inspect(capsys, ct_and_mr_folder, "--series", "1.2.3")
    assert code == 2 and out == ""
    assert err.startswith("fedseg: error: series 1.2.3 is not in") and err.count("\n") == 1
    assert "MR 1 slice(s)" in err and "CT 1 slice(s)" in err


def test_slicer_segmentation_shows_segment_names(capsys):
    code, out, _ = run_inspect(capsys, SLICERIO_DATA / "Segmentation.seg.nrrd")
    assert code == 0
    assert out.splitlines()[0].endswith(": Slicer segmentation")
    assert "1: ribs" in out and "6: left lung" in out and "128 x 128 x 34 voxels" in out


def test_missing_slice_is_readable_and_reported_as_a_warning(capsys, tmp_path):
    code, out, _ = run_inspect(capsys, gapped_ct_series(tmp_path / "gap"))
    assert code == 0
    assert "slices       3" in out and "about 1 slice(s) missing" in out


def test_unreadable_series_is_exit_2_while_the_readable_one_is_still_shown(capsys, tmp_path):
    folder = tmp_path / "mixed"
    folder.mkdir()
    shutil.copy(pydicom_file("CT_small.dcm"), folder)
    shutil.copy(pydicom_file("MR_truncated.dcm"), folder)
    code, out, err = run_inspect(capsys, folder)
    assert code == 2
    assert "128 x 128 x 1 voxels" in out and "truncated" in out
    assert err.startswith("fedseg: error:") and "MR_truncated.dcm" in err


def test_console_script_reports_errors_in_one_line_and_json_on_stdout(tmp_path):
    command = [sys.executable, "-c", "import sys; from app.cli import main; sys.exit(main())", "inspect"]
    bad = subprocess.run([*command, str(tmp_path / "nothing.nii.gz")], capture_output=True, text=True)
    assert bad.returncode == 2 and bad.stdout == ""
    assert bad.stderr == f"fedseg: error: {tmp_path / 'nothing.nii.gz'} does not exist\n"
    good = subprocess.run([*command, str(SLICERIO_DATA / "CTChest4.nrrd"), "--json"], capture_output=True,
                          text=True)
    assert good.returncode == 0, good.stderr
    report = json.loads(good.stdout)
    assert report["format"] == "NRRD" and report["volumes"][0]["size"] == [128, 128, 34]


@pytest.mark.parametrize(
    ("direction", "expected"),
    [
        ((1, 0, 0, 0, 1, 0, 0, 0, 1), "LPS (axes toward left, posterior, superior)"),
        # Sagittal slices: x runs to the back (P = +y), y down (I = -z), z to the right (R = -x).
        ((0, 0, -1, 1, 0, 0, 0, -1, 0), "PIR (axes toward posterior, inferior, right)"),
        ((0.866, -0.5, 0, 0.5, 0.866, 0, 0, 0, 1), "oblique axes (resampled onto the canonical RAS grid"),
    ],
)
def test_the_storage_orientation_is_named(capsys, tmp_path, direction, expected):
    image = sitk.GetImageFromArray(np.zeros((3, 4, 5), np.int16))
    image.SetDirection([float(v) for v in direction])
    sitk.WriteImage(image, str(tmp_path / "study.nii.gz"))
    code, out, _ = run_inspect(capsys, str(tmp_path / "study.nii.gz"))
    assert code == 0 and f"stored as    {expected}" in out
    code, out, _ = run_inspect(capsys, str(tmp_path / "study.nii.gz"), "--json")
    assert json.loads(out)["volumes"][0]["orientation"] == expected.split(" ")[0]
