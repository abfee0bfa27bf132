"""The validating strategies survive what ends a stock flwr 1.42 run, and average honest replies exactly."""

import csv
import io
import json
import logging

import numpy as np
import pytest
from fed_replies import FakeGrid, error_reply, global_arrays, reply, shifted
from flwr.app import Array, ArrayRecord, ConfigRecord, Error, Message, MessageType, RecordDict
from flwr.common.constant import SUPERLINK_NODE_ID
from flwr.serverapp.strategy import FedAvg

from federation.config import FederationSettings
from federation.site_history import metrics_csv, metrics_jsonl, write_metrics
from federation.strategy import ValidatingFedAvg, ValidatingFedProx, build_strategy, cast_like
from federation.validation import ValidationLimits


def as_record(arrays: dict[str, np.ndarray]) -> ArrayRecord:
    return ArrayRecord({key: Array(value) for key, value in arrays.items()})


def as_numpy(record: ArrayRecord) -> dict[str, np.ndarray]:
    return {key: array.numpy() for key, array in record.items()}


@pytest.fixture
def strategy(server_identity) -> ValidatingFedAvg:
    """A strategy that has configured round 1 with the global arrays, as Strategy.start would."""
    strategy = ValidatingFedAvg(min_train_nodes=1, min_available_nodes=1)
    strategy.configure_train(1, as_record(global_arrays()), ConfigRecord(), FakeGrid([1, 2, 3]))
    return strategy


def test_honest_replies_average_to_the_hand_computed_weighted_mean(strategy):
    a, b = shifted(0.1), shifted(-0.3)
    a["norm.num_batches_tracked"] = np.array(20, np.int64)
    b["norm.num_batches_tracked"] = np.array(31, np.int64)
    arrays, metrics = strategy.aggregate_train(1, [
        reply(a, num_examples=30, node_id=1, metrics={"train-loss": 0.5}),
        reply(b, num_examples=10, node_id=2, metrics={"train-loss": 0.9}),
    ])
    result = as_numpy(arrays)
    expected_weight = (30 * a["conv.weight"].astype(np.float64) + 10 * b["conv.weight"]) / 40
    np.testing.assert_allclose(result["conv.weight"], expected_weight, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(result["conv.bias"], np.full(2, (30 * 0.1 - 10 * 0.3) / 40), atol=1e-7)
    # dtypes and key order of the global model survive averaging; the int counter is rounded
    assert list(result) == list(global_arrays())
    assert {k: v.dtype for k, v in result.items()} == {k: v.dtype for k, v in global_arrays().items()}
    assert result["norm.num_batches_tracked"] == round((30 * 20 + 10 * 31) / 40)
    assert metrics["train-loss"] == pytest.approx((30 * 0.5 + 10 * 0.9) / 40)


def test_a_wrong_shaped_reply_is_dropped_where_stock_fedavg_raises(strategy, caplog):
    wrong = {**shifted(0.5), "conv.weight": np.zeros((3, 3), np.float32)}
    replies = [reply(shifted(0.1), node_id=1), reply(wrong, node_id=2, site="bad-site")]
    with pytest.raises(ValueError):
        FedAvg().aggregate_train(1, replies)

    with caplog.at_level(logging.WARNING, logger="federation.strategy"):
        arrays, _ = strategy.aggregate_train(1, replies)
    np.testing.assert_allclose(as_numpy(arrays)["conv.weight"], shifted(0.1)["conv.weight"])
    assert "bad-site" in caplog.text and "shape-mismatch" in caplog.text


def test_a_nan_reply_is_dropped_where_stock_fedavg_averages_it_in(strategy):
    poisoned = {**shifted(0.1), "conv.bias": np.array([np.nan, 0.0], np.float32)}
    replies = [reply(shifted(0.1), node_id=1), reply(poisoned, node_id=2)]
    stock, _ = FedAvg().aggregate_train(1, replies)
    assert np.isnan(as_numpy(stock)["conv.bias"]).any()

    arrays, _ = strategy.aggregate_train(1, replies)
    assert all(np.isfinite(value).all() for value in as_numpy(arrays).values())
    assert [r.status for r in strategy.history.records] == ["accepted", "non-finite"]


def test_a_reply_claiming_a_billion_examples_is_dropped(strategy):
    arrays, _ = strategy.aggregate_train(1, [
        reply(shifted(0.1), num_examples=10, node_id=1),
        reply(shifted(9.0), num_examples=1e9, node_id=2),
    ])
    np.testing.assert_allclose(as_numpy(arrays)["conv.bias"], np.full(2, 0.1), rtol=1e-6)
    assert strategy.history.records[1].status == "bad-num-examples"


def test_with_too_few_valid_replies_the_global_model_stays(server_identity):
    strategy = ValidatingFedAvg(min_valid_replies=2, min_train_nodes=1, min_available_nodes=1)
    strategy.configure_train(4, as_record(global_arrays()), ConfigRecord(), FakeGrid([1, 2]))
    arrays, metrics = strategy.aggregate_train(4, [reply(shifted(0.1), node_id=1), error_reply(2)])
    assert metrics is None
    for key, value in global_arrays().items():
        np.testing.assert_array_equal(as_numpy(arrays)[key], value)


def test_no_replies_at_all_keep_the_global_model(strategy):
    arrays, metrics = strategy.aggregate_train(1, [])
    assert metrics is None
    np.testing.assert_array_equal(as_numpy(arrays)["conv.weight"], global_arrays()["conv.weight"])


def test_sites_reporting_different_metrics_do_not_break_the_round(strategy):
    arrays, metrics = strategy.aggregate_train(1, [
        reply(shifted(0.1), node_id=1, metrics={"train-loss": 1.0, "dice": [0.2, 0.4]}),
        reply(shifted(0.1), node_id=2, metrics={"train-loss": 3.0, "dice": [0.2], "site-seconds": 1.0}),
    ])
    assert arrays is not None
    assert dict(metrics) == {"train-loss": pytest.approx(2.0)}


def test_history_keys_sites_by_display_name_never_by_path(strategy, server_identity):
    strategy.aggregate_train(1, [
        reply(shifted(0.1), node_id=1, site="CT Hospital", metrics={"train-loss": 0.5}),
        reply(shifted(0.1), node_id=2, site="/data/mr/site"),
    ])
    strategy.configure_train(2, as_record(global_arrays()), ConfigRecord(), FakeGrid([1, 2]))
    strategy.aggregate_train(2, [error_reply(1), reply(shifted(0.1), node_id=2)])
    records = [(r.round, r.site, r.status) for r in strategy.history.records]
    assert records == [
        (1, "CT Hospital", "accepted"), (1, "node-2", "accepted"),
        (2, "CT Hospital", "site-error"), (2, "node-2", "accepted"),
    ]
    first = strategy.history.records[0]
    assert first.num_examples == 10 and first.metrics == {"train-loss": 0.5}
    assert first.update_norm == pytest.approx(np.sqrt(8) * 0.1, rel=1e-5)
    assert strategy.history.sites() == ["CT Hospital", "node-2"]


def test_the_superlinks_error_reply_for_a_site_that_left_is_that_sites_never_a_new_one(strategy):
    """Flower answers for a node that left with an error reply from node 1 (the SuperLink itself)."""
    strategy.aggregate_train(1, [reply(shifted(0.1), node_id=7, site="CT Hospital")])
    sent = Message(RecordDict(), dst_node_id=7, message_type=MessageType.TRAIN)
    sent.metadata.__dict__["_message_id"] = "train-2-to-7"  # what the grid does when it pushes a message
    strategy.history.sent([sent])
    left = Message(Error(code=0, reason="node unavailable"), reply_to=sent)
    left.metadata.__dict__["_src_node_id"] = SUPERLINK_NODE_ID
    strategy.aggregate_train(2, [left])
    assert [(r.round, r.site, r.node_id, r.status) for r in strategy.history.records] == [
        (1, "CT Hospital", 7, "accepted"), (2, "CT Hospital", 7, "site-error")]
    assert strategy.history.sites() == ["CT Hospital"]


def test_evaluate_drops_bad_replies_and_averages_the_rest(strategy):
    metrics = strategy.aggregate_evaluate(1, [
        reply(None, 30, node_id=1, site="ct", metrics={"dice": 0.8}, message_type=MessageType.EVALUATE),
        reply(None, 10, node_id=2, site="mr", metrics={"dice": 0.4}, message_type=MessageType.EVALUATE),
        reply(None, 10, node_id=3, site="bad", metrics={"dice": float("nan")},
              message_type=MessageType.EVALUATE),
        error_reply(4, MessageType.EVALUATE),
    ])
    assert metrics["dice"] == pytest.approx((30 * 0.8 + 10 * 0.4) / 40)
    assert [(r.phase, r.site, r.status) for r in strategy.history.records] == [
        ("evaluate", "ct", "accepted"), ("evaluate", "mr", "accepted"),
        ("evaluate", "bad", "non-finite"), ("evaluate", "node-4", "site-error"),
    ]
    assert strategy.aggregate_evaluate(2, [error_reply(4, MessageType.EVALUATE)]) is None


def test_fedprox_sends_proximal_mu_and_validates_too(server_identity):
    strategy = ValidatingFedProx(proximal_mu=0.01, min_train_nodes=2, min_available_nodes=2)
    messages = list(strategy.configure_train(1, as_record(global_arrays()), ConfigRecord(), FakeGrid([5, 6])))
    assert sorted(m.metadata.dst_node_id for m in messages) == [5, 6]
    assert all(m.content["config"]["proximal-mu"] == pytest.approx(0.01) for m in messages)
    wrong = {**shifted(0.1), "conv.bias": np.zeros(5, np.float32)}
    arrays, _ = strategy.aggregate_train(1, [reply(shifted(0.2), node_id=5), reply(wrong, node_id=6)])
    np.testing.assert_allclose(as_numpy(arrays)["conv.bias"], np.full(2, 0.2), rtol=1e-6)


def test_summary_reports_the_validation_settings(caplog):
    limits = ValidationLimits(max_num_examples=77)
    strategy = ValidatingFedProx(proximal_mu=0.1, limits=limits, min_valid_replies=2)
    with caplog.at_level(logging.INFO, logger="federation.strategy"):
        strategy.summary()
    assert "max_num_examples=77" in caplog.text and "min_valid_replies=2" in caplog.text


def test_aggregating_before_configuring_is_a_programming_error():
    with pytest.raises(RuntimeError, match="configure_train"):
        ValidatingFedAvg().aggregate_train(1, [])


def test_build_strategy_follows_the_federation_settings():
    limits = ValidationLimits(max_num_examples=500)
    prox = build_strategy(FederationSettings(rounds=3, min_sites=3, strategy="fedprox", proximal_mu=0.1,
                                             fraction=0.5, min_valid_replies=2), limits)
    assert isinstance(prox, ValidatingFedProx)
    assert (prox.proximal_mu, prox.min_train_nodes, prox.fraction_train) == (0.1, 3, 0.5)
    assert (prox.limits, prox.min_valid_replies) == (limits, 2)
    plain = build_strategy(FederationSettings(rounds=3, min_sites=2), limits)
    assert type(plain) is ValidatingFedAvg


def test_cast_like_restores_dtypes_and_order():
    averaged = as_record({"b": np.array(2.6), "a": np.array([1.5], np.float64)})
    reference = {"a": np.zeros(1, np.float32), "b": np.array(0, np.int64)}
    result = as_numpy(cast_like(averaged, reference))
    assert list(result) == ["a", "b"]
    assert result["a"].dtype == np.float32 and result["b"].dtype == np.int64 and result["b"] == 3


def test_metrics_files_hold_every_site_round(strategy, tmp_path):
    strategy.aggregate_train(1, [
        reply(shifted(0.1), node_id=1, site="ct", metrics={"train-loss": 0.5, "dice": [0.7, 0.9]}),
        reply(shifted(0.1), node_id=2, site="mr", metrics={"train-loss": float("nan")}),
    ])
    records = strategy.history.records
    lines = [json.loads(line) for line in metrics_jsonl(records).splitlines()]
    assert [(line["site"], line["status"]) for line in lines] == [("ct", "accepted"), ("mr", "non-finite")]
    assert lines[1]["metrics"] == {"train-loss": None}  # NaN becomes null: strict JSON

    rows = list(csv.DictReader(io.StringIO(metrics_csv(records))))
    assert rows[0]["site"] == "ct" and rows[0]["dice.0"] == "0.7" and rows[0]["dice.1"] == "0.9"
    assert rows[1]["dice.0"] == "" and rows[1]["status"] == "non-finite"

    jsonl_path, csv_path = write_metrics(records, tmp_path / "run")
    assert jsonl_path.read_text() == metrics_jsonl(records)
    assert csv_path.read_text() == metrics_csv(records)
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["metrics.csv", "metrics.jsonl"]
