"""Fixtures of the federation tests."""

import pytest


@pytest.fixture
def server_identity(monkeypatch):
    """The task identity a ServerApp process has, so instruction messages can be created."""
    from flwr.supercore.task_identity import TaskIdentity

    for attribute, value in (("_run_id", 1), ("_node_id", 0), ("_task_id", 1)):
        monkeypatch.setattr(TaskIdentity, attribute, value)
