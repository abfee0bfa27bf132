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


@pytest.fixture(scope="module")
def dicom_dataset(tmp_path_factory) -> Path:
    """Two sagittal phantom CTs as DICOM series: the training case labelled by a DICOM-SEG exported from
    its NIfTI label, the test case by the NIfTI file itself."""
    from segmentation.datalist import write_dataset_json
    from segmentation.export import write_dicom_seg
    from segmentation.io.dicom import read_dicom_series
    from segmentation.io.readers import read_label_map
    from segmentation.synth import PhantomGeometry, generate_dataset
    from segmentation.synth.anatomy import LABELS

    root = tmp_path_factory.mktemp("dicom_dataset")
    index = generate_dataset(root, "ct", 2, 3, size=16, test_fraction=0.5,
                             geometry=PhantomGeometry(orientation="PIR", file_format="dicom"))
    case = index.training[0]
    write_dicom_seg(read_label_map(case.label), read_dicom_series(case.image).datasets, root / "train.dcm",
                    labels=LABELS)
    write_dataset_json(root, name="dicom site", modality="ct", labels=LABELS,
                       training=[("imagesTr/synth_ct_000", "train.dcm")],
                       test=[("imagesTs/synth_ct_001", "labelsTs/synth_ct_001.nii.gz")])
    return root


def test_a_dataset_folder_is_checked_case_by_case(capsys, dicom_dataset):
    code, out, err = run_inspect(capsys, dicom_dataset)
    assert code == 0 and err == ""
    assert "dataset 'dicom site' (ct), 1 training and 1 test case(s)" in out
    assert "case synth_ct_000 (training)" in out and "case synth_ct_001 (test)" in out
    assert "image        imagesTr/synth_ct_000 (DICOM folder)" in out
    assert "label        train.dcm (DICOM-SEG): 1: liver, 2: kidney, 3: spleen, 4: pancreas" in out
    assert "label        labelsTs/synth_ct_001.nii.gz (NIfTI)" in out
    assert out.count("stored as    PIR") == 2
    code, out, _ = run_inspect(capsys, dicom_dataset, "--json")
    report = json.loads(out)
    assert code == 0 and report["format"] == "dataset" and report["name"] == "dicom site"
    train, test = report["cases"]
    assert train["label"]["format"] == "DICOM-SEG" and train["error"] is None
    assert train["image"]["size"] == train["label"]["size"] == [16, 8, 16]  # 16 sagittal slices of 8 x 16
    assert test["label"]["format"] == "NIfTI" and test["image"]["orientation"] == "PIR"


def test_a_dicom_seg_of_another_series_fails_its_case_only(capsys, dicom_dataset, tmp_path):
    shutil.copytree(dicom_dataset, tmp_path / "copy")
    data = json.loads((tmp_path / "copy" / "dataset.json").read_text())
    data["test"][0]["label"] = "train.dcm"  # the training case's SEG under the test case's series
    (tmp_path / "copy" / "dataset.json").write_text(json.dumps(data))
    code, out, err = run_inspect(capsys, tmp_path / "copy")
    assert code == 2
    assert "case synth_ct_000 (training)" in out and "stored as    PIR" in out  # still shown
    assert err.count("\n") == 1 and err.startswith("fedseg: error: case synth_ct_001: ")
    assert "train.dcm segments series" in err
    code, _, err = run_inspect(capsys, tmp_path / "copy", "--series", "1.2.3")
    assert code == 2 and "--series does not apply" in err


def test_a_dicom_seg_alone_shows_its_segments_on_its_own_grid(capsys, dicom_dataset):
    code, out, _ = run_inspect(capsys, dicom_dataset / "train.dcm")
    assert code == 0 and out.splitlines()[0].endswith(": DICOM-SEG")
    assert "1: liver" in out and "4: pancreas" in out and "16 x 8 x 16 voxels" in out
    assert "stored as    PIR" in out
