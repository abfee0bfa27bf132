"""`fedseg experiment cross-modality`: argument errors exit 2 before any work starts."""

from app.cli import main


def test_unknown_augmentation_is_a_one_line_error(tmp_path, capsys):
    assert (
        main(["experiment", "cross-modality", "--out", str(tmp_path / "x"), "--augmentations", "gin,mixup"])
        == 2
    )
    error = capsys.readouterr().err.strip()
    assert error.startswith("fedseg: error: --augmentations") and "mixup" in error and "\n" not in error
    assert not (tmp_path / "x").exists()


def test_zero_epochs_is_refused(tmp_path, capsys):
    assert main(["experiment", "cross-modality", "--out", str(tmp_path / "x"), "--epochs", "0"]) == 2
    assert "--epochs must be at least 1" in capsys.readouterr().err
