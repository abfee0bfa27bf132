"""Fixtures of the federation tests."""

import pytest

from segmentation.case_cache import CACHE_DIR_ENVIRONMENT


@pytest.fixture
def server_identity(monkeypatch):
    """The task identity a ServerApp process has, so instruction messages can be created."""
    from flwr.supercore.task_identity import TaskIdentity

    for attribute, value in (("_run_id", 1), ("_node_id", 0), ("_task_id", 1)):
        monkeypatch.setattr(TaskIdentity, attribute, value)


@pytest.fixture(scope="module")
def site_dir(tmp_path_factory):
    """A tiny labelled site dataset on disk (site_data.write_disk_site), one per test module."""
    from site_data import write_disk_site

    return write_disk_site(tmp_path_factory.mktemp("site"))


@pytest.fixture
def case_cache(tmp_path, monkeypatch):
    """Each test its own case cache, so no test reads another's cached volumes."""
    monkeypatch.setenv(CACHE_DIR_ENVIRONMENT, str(tmp_path / "cache"))
