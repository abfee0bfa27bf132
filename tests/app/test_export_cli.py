"""`fedseg export bundle`: a MONAI bundle from a checkpoint, one-line errors, never a silent overwrite."""

import json
import subprocess
import sys

import torch

from app.cli import main
from segmentation.checkpoint import load_checkpoint


def test_a_bundle_holds_the_checkpoints_weights_labels_and_plan(tiny_checkpoint, tmp_path, capsys):
    out = tmp_path / "bundle"
    assert main(["export", "bundle", "--model", str(tiny_checkpoint), "--out", str(out)]) == 0
    assert capsys.readouterr().out.strip() == f"wrote MONAI bundle to {out}"
    state = torch.load(out / "models" / "model.pt", weights_only=True)
    expected = load_checkpoint(tiny_checkpoint).state_dict
    assert state.keys() == expected.keys()
    assert all(torch.equal(state[name], value) for name, value in expected.items())
    metadata = json.loads((out / "configs" / "metadata.json").read_text())
    assert metadata["labels"] == {"0": "background", "1": "liver", "2": "spleen"}
    assert metadata["fedseg"]["plan"]["target_spacing"] == [2.0, 2.0, 5.0]
    inference = json.loads((out / "configs" / "inference.json").read_text())
    assert {"preprocessing", "inferer", "postprocessing", "evaluator", "initialize", "run"} <= set(inference)
    assert inference["inferer"]["roi_size"] == [32, 32]


def test_a_folder_with_files_is_kept_unless_overwrite_is_given(tiny_checkpoint, tmp_path, capsys):
    out = tmp_path / "bundle"
    argv = ["export", "bundle", "--model", str(tiny_checkpoint), "--out", str(out)]
    assert main(argv) == 0
    capsys.readouterr()
    metadata = out / "configs" / "metadata.json"
    metadata.write_text("edited by hand")
    assert main(argv) == 2
    error = capsys.readouterr().err
    assert error.startswith("fedseg: error: ") and error.count("\n") == 1 and "is not empty" in error
    assert metadata.read_text() == "edited by hand"
    assert main([*argv, "--overwrite"]) == 0
    assert json.loads(metadata.read_text())["labels"]["1"] == "liver"


def test_a_missing_or_foreign_checkpoint_exits_2_with_one_line(tmp_path, capsys):
    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": torch.zeros(3)}, foreign)
    for model, message in ((tmp_path / "absent.pt", "no such checkpoint file"),
                           (foreign, "not a FedSeg checkpoint")):
        assert main(["export", "bundle", "--model", str(model), "--out", str(tmp_path / "bundle")]) == 2
        error = capsys.readouterr().err
        assert message in error and error.count("\n") == 1
    assert not (tmp_path / "bundle").exists()


def test_export_help_loads_no_torch():
    code = ("import sys; from app.cli import main\ntry:\n main(['export', 'bundle', '--help'])\n"
            "except SystemExit: pass\nassert 'torch' not in sys.modules, 'torch imported by export --help'")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "--overwrite" in result.stdout
