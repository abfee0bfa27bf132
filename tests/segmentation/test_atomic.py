"""Files about to be replaced, or damaged, are set aside under a new name: never over an earlier one."""

from pathlib import Path

from segmentation.atomic import set_aside, write_text_atomic


def test_set_aside_keeps_every_earlier_copy_byte_for_byte(tmp_path: Path) -> None:
    path = tmp_path / "dataset.json"
    kept = []
    for version in ("first", "second", "third"):
        path.write_bytes(version.encode())
        kept.append(set_aside(path, "backup"))
    assert not path.exists()
    assert [copy.read_bytes() for copy in kept] == [b"first", b"second", b"third"]
    assert len(set(kept)) == 3
    assert all(copy.parent == tmp_path and copy.name.startswith("dataset.json.backup-") for copy in kept)


def test_write_text_atomic_replaces_the_file_whole(tmp_path: Path) -> None:
    path = write_text_atomic(tmp_path / "a" / "report.md", "new")
    assert path.read_text() == "new"
    assert [p.name for p in path.parent.iterdir()] == ["report.md"]
