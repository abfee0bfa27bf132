"""The demo workspace keeps up with the demo's settings: a site made by an earlier workbench (fewer cases)
is remade, while a site folder holding anything the demo did not write is never touched."""

import pytest

from app.services import demo
from segmentation.datalist import load_dataset
from segmentation.synth import generate_dataset


@pytest.fixture
def small_demo(monkeypatch):
    monkeypatch.setattr(demo, "DEMO_CASES", 3)
    monkeypatch.setattr(demo, "DEMO_SIZE", 16)


def earlier_site(root, modality="ct", seed=1):
    """A site as an earlier workbench made it: two cases and no stamp."""
    return generate_dataset(root / "demo" / f"site-{modality}", modality, 2, seed, size=16).root


def case_count(folder):
    dataset = load_dataset(folder)
    return len(dataset.training) + len(dataset.test)


def test_an_earlier_demo_site_is_remade_with_the_current_cases(tmp_path, small_demo, monkeypatch):
    site = earlier_site(tmp_path)
    messages = []
    workspace = demo.prepare_demo_workspace(tmp_path, messages.append)
    assert workspace.sites["ct"] == site and case_count(site) == 3
    assert messages == ["remaking the CT demo site (3 cases)", "making the MR-T1 demo site (3 cases)",
                        "making the MR-T2 demo site (3 cases)"]
    demo.prepare_demo_workspace(tmp_path, messages.append)
    assert len(messages) == 3  # up to date: nothing is made again
    monkeypatch.setattr(demo, "DEMO_CASES", 4)  # a later workbench's demo
    demo.prepare_demo_workspace(tmp_path, messages.append)
    assert messages[3:] == [f"remaking the {name} demo site (4 cases)" for name in ("CT", "MR-T1", "MR-T2")]
    assert all(case_count(folder) == 4 for folder in workspace.sites.values())


@pytest.mark.parametrize("own_file", ["imagesTr/patient_7.nii.gz", "notes.txt", "imagesTs/synth_ct_001.nrrd"])
def test_a_site_folder_holding_the_users_files_is_left_alone(tmp_path, small_demo, own_file):
    site = earlier_site(tmp_path)
    (site / own_file).write_bytes(b"the user's own data")
    before = sorted(path.relative_to(site) for path in site.rglob("*"))
    messages = []
    demo.prepare_demo_workspace(tmp_path, messages.append)
    assert messages[0] == f"kept {site} as it is: {own_file} is not a demo file"
    assert (site / own_file).read_bytes() == b"the user's own data" and case_count(site) == 2
    assert sorted(path.relative_to(site) for path in site.rglob("*")) == before
