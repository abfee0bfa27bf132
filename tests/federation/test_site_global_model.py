"""Every site keeps the federation's global model: a plaintext site's ClientApp saves the model it receives
as global-model.pt next to its event file, labelled with the round that made it (a training message for
round r carries round r-1's model, an evaluation message for round r carries round r's), and a message
it cannot use leaves the kept file as it was.

Ground truth: the arrays put into the server's messages.
"""

import numpy as np
import pytest
from flwr.app import MessageType
from test_client_app import TRAINING, context, instruction

from federation import client_app
from federation.task import SiteErrorCode, named_weights, validation_cases
from segmentation.algorithm import SegmentationAlgorithm
from segmentation.checkpoint import load_checkpoint
from segmentation.datalist import load_dataset
from segmentation.events import read_events
from segmentation.settings import GLOBAL_MODEL, GLOBAL_MODEL_NAME, PERSONALISED_MODEL, PERSONALISED_MODEL_NAME

pytestmark = pytest.mark.usefixtures("case_cache")  # conftest: each test its own case cache


@pytest.fixture(scope="module")
def round_models() -> list[dict[str, np.ndarray]]:
    """Three distinct global models of the federation's network (as after rounds 0, 1 and 2)."""
    initial = named_weights(SegmentationAlgorithm(TRAINING, device="cpu"))
    rng = np.random.default_rng(7)
    return [{name: (array + rng.normal(0.0, 0.1, array.shape)).astype(array.dtype)
             if np.issubdtype(array.dtype, np.floating) else array for name, array in initial.items()}
            for _ in range(3)]


def kept_model(folder):
    return load_checkpoint(folder / GLOBAL_MODEL_NAME)


def assert_weights(checkpoint, arrays: dict[str, np.ndarray]) -> None:
    assert list(checkpoint.state_dict) == list(arrays)
    for name, array in arrays.items():
        np.testing.assert_array_equal(checkpoint.state_dict[name].numpy(), array, err_msg=name)


def kept_rounds(event_file) -> list[int]:
    return [event["round"] for event in read_events(event_file) if event["kind"] == "global-model"]


def test_a_training_message_leaves_the_previous_rounds_model_not_the_trained_one(
    server_identity, site_dir, round_models, tmp_path
):
    site = context(site_dir, tmp_path / "events.jsonl")
    reply = client_app.app(instruction(MessageType.TRAIN, round_models[0], server_round=1), site)
    assert not reply.has_error()
    assert not (tmp_path / GLOBAL_MODEL_NAME).exists()  # round 1 starts from the initial model: no round's

    reply = client_app.app(instruction(MessageType.TRAIN, round_models[1], server_round=2), site)
    assert not reply.has_error()
    kept = kept_model(tmp_path)
    assert kept.round == 1  # round 2 was sent round 1's model; round 2 itself has not finished
    assert_weights(kept, round_models[1])
    assert (kept.plan, kept.network, kept.labels) == (TRAINING.plan, TRAINING.network, TRAINING.plan.labels)
    assert kept.epoch == 1  # one local epoch per round, one finished round
    assert kept_rounds(tmp_path / "events.jsonl") == [1]


def test_an_evaluation_keeps_that_rounds_model_and_a_failing_message_changes_nothing(
    server_identity, site_dir, round_models, tmp_path
):
    site = context(site_dir, tmp_path / "events.jsonl")
    reply = client_app.app(instruction(MessageType.EVALUATE, round_models[2], server_round=2), site)
    assert not reply.has_error()
    assert kept_model(tmp_path).round == 2
    assert_weights(kept_model(tmp_path), round_models[2])
    stored = (tmp_path / GLOBAL_MODEL_NAME).read_bytes()

    broken = {**round_models[0]}
    broken.pop(next(iter(broken)))  # weights of another network: the site cannot use them
    reply = client_app.app(instruction(MessageType.TRAIN, broken, server_round=3), site)
    assert reply.error.code == SiteErrorCode.MODEL
    assert (tmp_path / GLOBAL_MODEL_NAME).read_bytes() == stored

    # Round 3's training message carries round 2's model again: the site keeps what it has.
    reply = client_app.app(instruction(MessageType.TRAIN, round_models[2], server_round=3), site)
    assert not reply.has_error()
    assert (tmp_path / GLOBAL_MODEL_NAME).read_bytes() == stored
    assert kept_rounds(tmp_path / "events.jsonl") == [2]


def test_a_later_round_replaces_the_kept_model(server_identity, site_dir, round_models, tmp_path):
    site = context(site_dir, tmp_path / "events.jsonl")
    client_app.app(instruction(MessageType.TRAIN, round_models[1], server_round=2), site)
    client_app.app(instruction(MessageType.EVALUATE, round_models[2], server_round=2), site)
    assert kept_model(tmp_path).round == 2
    assert_weights(kept_model(tmp_path), round_models[2])
    assert kept_rounds(tmp_path / "events.jsonl") == [1, 2]
    assert [path.name for path in tmp_path.glob("*.pt")] == [GLOBAL_MODEL_NAME]  # only the latest is kept


def test_the_final_evaluation_fine_tunes_a_personalised_model_and_keeps_both(
    server_identity, site_dir, round_models, tmp_path
):
    site = context(site_dir, tmp_path / "events.jsonl")
    final = instruction(MessageType.EVALUATE, round_models[2], server_round=2, **{"personalise-epochs": 2})
    reply = client_app.app(final, site)
    assert not reply.has_error()
    assert_weights(kept_model(tmp_path), round_models[2])  # the global model stays the one received
    assert kept_model(tmp_path).kind == GLOBAL_MODEL

    personalised = load_checkpoint(tmp_path / PERSONALISED_MODEL_NAME)
    assert (personalised.kind, personalised.round) == (PERSONALISED_MODEL, 2)
    assert personalised.train_modality == "ct"  # the site's own scanner, without cross-modality augmentation
    assert personalised.augmentation == "none"
    assert (personalised.plan, personalised.network) == (TRAINING.plan, TRAINING.network)
    changed = [name for name, array in round_models[2].items()
               if not np.array_equal(personalised.state_dict[name].numpy(), array)]
    assert changed  # fine-tuned at the site, not a copy
    # The numbers sent are the kept personalised model's own scores on the site's validation cases.
    validation = validation_cases(load_dataset(site_dir))
    scores = SegmentationAlgorithm.from_checkpoint(personalised, device="cpu").evaluate(validation).metrics
    metrics = reply.content.metric_records["metrics"]
    assert metrics["personalised/dice"] == pytest.approx(scores["dice"], abs=1e-5)
    assert "dice" in metrics  # the global model's, as before
    events = read_events(tmp_path / "events.jsonl")
    kept = [(event["round"], event["epochs"]) for event in events if event["kind"] == "personalised-model"]
    assert kept == [(2, 2)]


def test_without_personalise_epochs_no_personalised_model_is_made(server_identity, site_dir, round_models,
                                                                   tmp_path):
    site = context(site_dir, tmp_path / "events.jsonl")
    reply = client_app.app(instruction(MessageType.EVALUATE, round_models[2], server_round=2), site)
    assert not reply.has_error() and "personalised/dice" not in reply.content.metric_records["metrics"]
    assert not (tmp_path / PERSONALISED_MODEL_NAME).exists()
