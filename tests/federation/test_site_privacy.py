"""Differential privacy at a federation site: site.toml [privacy] turns DP-SGD on; every training reply
carries the epsilon the site has spent (and no training loss, which DP does not protect); the account
continues across rounds and across a restart (its file beside the event file); a round that would go past
the budget is refused with code 108 before any step while evaluation goes on; a damaged account is never
started afresh.

Ground truth: Opacus's RDP accountant fed the account the site kept, and the settings written here.
"""

import json

import pytest
from flwr.app import Context, MessageType, RecordDict
from opacus.accountants import RDPAccountant
from test_client_app import TRAINING, instruction

from federation import client_app
from federation.config import load_site_config
from federation.site_errors import SiteErrorCode
from federation.task import PRIVACY_ACCOUNT_NAME, SiteSettings, error_code, named_weights
from segmentation.algorithm import SegmentationAlgorithm
from segmentation.errors import ConfigError, PrivacyBudgetError
from segmentation.settings import PrivacySettings

pytestmark = pytest.mark.usefixtures("case_cache")  # conftest: each test its own case cache

PRIVATE = PrivacySettings(dp=True, noise_multiplier=1.5, max_grad_norm=1.0, delta=1e-5, epsilon_budget=50.0)


@pytest.fixture(scope="module")
def global_weights():
    return named_weights(SegmentationAlgorithm(TRAINING, device="cpu"))


def site(data_dir, folder, privacy=PRIVATE) -> Context:
    """A site's ClientApp context, as its SuperNode builds it from the node config (a fresh state: a
    restarted site)."""
    settings = SiteSettings("CT Hospital", "ct", data_dir, folder / "events.jsonl", privacy=privacy)
    return Context(run_id=1, node_id=7, node_config=settings.to_node_config(), state=RecordDict(),
                   run_config={})


def account(folder) -> list[tuple[float, float, int]]:
    return [tuple(entry) for entry in json.loads((folder / PRIVACY_ACCOUNT_NAME).read_text())]


def account_epsilon(folder, delta=1e-5) -> float:
    accountant = RDPAccountant()
    accountant.history = account(folder)
    return accountant.get_epsilon(delta)


def train(context, weights, server_round):
    return client_app.app(instruction(MessageType.TRAIN, weights, server_round), context)


def test_a_private_site_reports_the_epsilon_its_account_holds_across_rounds_and_a_restart(
    server_identity, site_dir, global_weights, tmp_path
):
    context = site(site_dir, tmp_path)
    first = train(context, global_weights, 1)
    assert not first.has_error()
    metrics = first.content.metric_records["metrics"]
    assert "train-loss" not in metrics and metrics["num-examples"] > 0
    assert metrics["epsilon"] == pytest.approx(account_epsilon(tmp_path)) and metrics["epsilon"] > 0
    steps = sum(entry[2] for entry in account(tmp_path))  # one epoch's Poisson steps

    second = train(context, global_weights, 2)
    spent = second.content.metric_records["metrics"]["epsilon"]
    assert spent == pytest.approx(account_epsilon(tmp_path)) and spent > metrics["epsilon"]

    restarted = site(site_dir, tmp_path)  # a new SuperNode: only the file remembers
    third = train(restarted, global_weights, 3)
    assert third.content.metric_records["metrics"]["epsilon"] == pytest.approx(account_epsilon(tmp_path))
    assert third.content.metric_records["metrics"]["epsilon"] > spent
    assert sum(entry[2] for entry in account(tmp_path)) == 3 * steps  # every round's steps, none lost


def test_a_round_beyond_the_budget_is_refused_before_any_step_and_evaluation_goes_on(
    server_identity, site_dir, global_weights, tmp_path
):
    tight = PrivacySettings(dp=True, epsilon_budget=0.5)
    context = site(site_dir, tmp_path, tight)
    reply = train(context, global_weights, 1)
    assert reply.has_error() and reply.error.code == SiteErrorCode.PRIVACY_BUDGET == 108
    assert reply.error.reason == "privacy_budget"  # the code's name, nothing of the site's
    assert not (tmp_path / PRIVACY_ACCOUNT_NAME).exists()  # nothing spent
    evaluated = client_app.app(instruction(MessageType.EVALUATE, global_weights, 1), context)
    assert not evaluated.has_error() and "dice" in evaluated.content.metric_records["metrics"]


def test_a_refusal_from_training_itself_answers_with_the_budget_code():
    assert error_code(PrivacyBudgetError("beyond the budget")) == SiteErrorCode.PRIVACY_BUDGET


def test_a_damaged_account_is_refused_and_kept(server_identity, site_dir, global_weights, tmp_path):
    (tmp_path / PRIVACY_ACCOUNT_NAME).write_text('[[1.5, 0.25, "many"]]')
    reply = train(site(site_dir, tmp_path), global_weights, 1)
    assert reply.has_error() and reply.error.code == SiteErrorCode.PRIVACY_BUDGET
    assert (tmp_path / PRIVACY_ACCOUNT_NAME).read_text() == '[[1.5, 0.25, "many"]]'


def test_a_site_without_dp_reports_no_epsilon(server_identity, site_dir, global_weights, tmp_path):
    reply = train(site(site_dir, tmp_path, PrivacySettings()), global_weights, 1)
    metrics = reply.content.metric_records["metrics"]
    assert "epsilon" not in metrics and "train-loss" in metrics
    assert not (tmp_path / PRIVACY_ACCOUNT_NAME).exists()


def site_toml(tmp_path, privacy: str) -> str:
    (tmp_path / "data").mkdir(exist_ok=True)
    path = tmp_path / "site.toml"
    path.write_text(f'[site]\nname = "A"\nmodality = "ct"\ndata_dir = "data"\n\n[server]\n'
                    f'address = "127.0.0.1:9092"\n\n[tls]\nenabled = false\n\n[privacy]\n{privacy}')
    return path


def test_site_toml_privacy_is_read_and_checked(tmp_path):
    config = load_site_config(site_toml(tmp_path, "dp = true\nnoise_multiplier = 2.0\nepsilon_budget = 8\n"))
    assert config.privacy == PrivacySettings(dp=True, noise_multiplier=2.0, epsilon_budget=8.0)
    assert load_site_config(site_toml(tmp_path, "")).privacy == PrivacySettings()  # off unless asked
    for text, message in (("delta = 1.5\n", "[privacy] delta must lie between 0 and 1, got 1.5"),
                          ("noise = 1.0\n", "[privacy] noise is not a known setting"),
                          ("dp = \"yes\"\n", "[privacy] dp must be true or false")):
        with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
            load_site_config(site_toml(tmp_path, text))
