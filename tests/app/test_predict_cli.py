"""`fedseg predict`: masks written in the study's geometry, label volumes printed, one-line errors."""

import subprocess
import sys

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from pydicom.data import get_testdata_file

from app.cli import main
from segmentation.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from segmentation.inference import label_volumes_ml, predict_volume
from segmentation.io import read_label_map, read_volume
from segmentation.io.dicom import read_dicom_series
from segmentation.plan import Plan
from segmentation.settings import NetworkConfig

CT_SMALL = get_testdata_file("CT_small.dcm", download=False)  # pydicom's real one-slice CT


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    torch.manual_seed(1)
    network = NetworkConfig(out_channels=3, channels=(4, 8))
    plan = Plan(labels={0: "background", 1: "liver", 2: "spleen"}, spatial_dims=2,
                target_spacing=(0.8, 1.1, 3.0), patch_size=(16, 16))
    checkpoint = Checkpoint(network=network, plan=plan, state_dict=network.build().state_dict())
    path = tmp_path_factory.mktemp("model") / "model.pt"
    save_checkpoint(checkpoint, path)
    return path


@pytest.fixture(scope="module")
def nifti_image(tmp_path_factory):
    """A small image with anisotropic spacing and a rotated direction."""
    rng = np.random.default_rng(0)
    image = sitk.GetImageFromArray(rng.normal(0.0, 100.0, (4, 18, 22)).astype(np.float32))
    image.SetSpacing((0.8, 1.1, 3.0))
    image.SetOrigin((10.0, -20.0, 5.0))
    image.SetDirection((0.0, 1.0, 0.0, -1.0, 0.0, 0.0, 0.0, 0.0, 1.0))
    path = tmp_path_factory.mktemp("study") / "image.nii.gz"
    sitk.WriteImage(image, str(path))
    return path


def test_nifti_mask_round_trips_in_the_input_geometry_and_volumes_are_printed(
    model_path, nifti_image, tmp_path, capsys
):
    out = tmp_path / "mask.nii.gz"
    assert main(["predict", "--model", str(model_path), "--input", str(nifti_image), "--out", str(out),
                 "--batch-size", "3"]) == 0
    printed = capsys.readouterr().out
    image = read_volume(nifti_image)
    expected = predict_volume(load_checkpoint(model_path), image, device="cpu")
    written = read_volume(out)
    assert written.geometry_differences(image) == []
    np.testing.assert_array_equal(written.array, expected.array)
    for name, millilitres in label_volumes_ml(expected).items():
        assert f"{name}: {millilitres:.2f} mL" in printed
    assert f"wrote mask to {out}" in printed


def test_dicom_input_gives_a_dicom_seg_with_the_same_mask_as_the_nifti(model_path, tmp_path, capsys):
    out, seg = tmp_path / "mask.nii.gz", tmp_path / "mask.dcm"
    argv = ["predict", "--model", str(model_path), "--input", CT_SMALL, "--out", str(out),
            "--dicom-seg", str(seg)]
    assert main(argv) == 0
    assert f"wrote DICOM-SEG to {seg}" in capsys.readouterr().out
    mask = read_volume(out).array
    assert len(np.unique(mask)) > 1
    series = read_dicom_series(CT_SMALL)
    np.testing.assert_array_equal(read_label_map(seg, series.volume, series.datasets).array, mask)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--dicom-seg", "{tmp}/seg.dcm"], "DICOM-SEG needs a DICOM source series; use --out mask.nii.gz"),
        ([], "say where to write the mask"),
        (["--out", "{tmp}/mask.png"], "unknown mask format"),
        (["--out", "{tmp}/mask.nii.gz", "--batch-size", "0"], "--batch-size must be at least 1"),
    ],
)
def test_unusable_options_exit_2_with_one_line(model_path, nifti_image, tmp_path, capsys, extra, message):
    extra = [arg.format(tmp=tmp_path) for arg in extra]
    assert main(["predict", "--model", str(model_path), "--input", str(nifti_image), *extra]) == 2
    error = capsys.readouterr().err
    assert message in error
    assert error.count("\n") == 1 and error.startswith("fedseg: error: ")
    assert list(tmp_path.iterdir()) == []


def test_missing_or_corrupt_checkpoint_and_unreadable_input_exit_2(model_path, nifti_image, tmp_path, capsys):
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"not a checkpoint")
    planless = tmp_path / "planless.pt"
    torch.save({"format": "fedseg-checkpoint/1"}, planless)
    broken = tmp_path / "broken.nii.gz"
    broken.write_bytes(b"not an image")
    sliver = tmp_path / "sliver.nii.gz"  # 3 voxels wide: no patch can be cut from it
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((4, 18, 3), np.float32)), str(sliver))
    out = str(tmp_path / "mask.nii.gz")
    cases = [
        (tmp_path / "absent.pt", nifti_image, "no such checkpoint file"),
        (corrupt, nifti_image, "not a readable checkpoint"),
        (planless, nifti_image, "without a plan"),
        (model_path, tmp_path / "absent.nii.gz", "does not exist"),
        (model_path, broken, str(broken)),
        (model_path, sliver, "3 voxels from left to right"),
    ]
    for model, study, message in cases:
        assert main(["predict", "--model", str(model), "--input", str(study), "--out", out]) == 2
        error = capsys.readouterr().err
        assert message in error and error.count("\n") == 1
    assert not (tmp_path / "mask.nii.gz").exists()


def test_console_script_reports_a_non_dicom_input_for_dicom_seg_without_traceback(
    model_path, nifti_image, tmp_path
):
    result = subprocess.run(
        [sys.executable, "-m", "app.cli", "predict", "--model", str(model_path), "--input", str(nifti_image),
         "--dicom-seg", str(tmp_path / "seg.dcm")],
        capture_output=True, text=True,
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "DICOM-SEG needs a DICOM source series" in result.stderr
