"""Reply validation: every kind of bad site data gets its reason code, honest replies pass; a reply may
carry only the metric and config names the federation knows, and an unknown name is never written or
shared back."""

import json
import logging
import math
from dataclasses import replace

import numpy as np
import pytest
from fed_replies import FakeGrid, global_arrays, reply, shifted
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, MessageType, MetricRecord, RecordDict
from site_data import PLAN

from federation import client_app
from federation.planning import fingerprint_queries
from federation.reply_keys import ReplyKeys, check_reply_keys
from federation.site_history import metrics_csv, metrics_jsonl
from federation.strategy import ValidatingFedAvg
from federation.task import SiteSettings, model_to_json, named_weights, shared_history_json
from federation.validation import (
    ACCEPTED,
    ValidationLimits,
    is_site_name,
    norm_threshold,
    update_norm,
    validate_metrics_reply,
    validate_replies,
)
from segmentation.algorithm import SegmentationAlgorithm
from segmentation.settings import NetworkConfig, TrainingConfig

LIMITS = ValidationLimits()


def judge(*contents: RecordDict, limits: ValidationLimits = LIMITS) -> list[str]:
    return [verdict.code for verdict in validate_replies(list(contents), global_arrays(), limits)]


def content(arrays, num_examples=10, **metrics) -> RecordDict:
    return reply(arrays, num_examples, metrics=metrics).content


def test_honest_replies_are_accepted_with_their_update_norm():
    verdicts = validate_replies([content(shifted(0.1)), content(shifted(-0.2))], global_arrays(), LIMITS)
    assert [v.code for v in verdicts] == [ACCEPTED, ACCEPTED]
    assert all(v.accepted and v.detail == "" for v in verdicts)
    # 8 float entries (6 weights + 2 biases) each moved by delta; the int counter did not move.
    assert verdicts[0].update_norm == pytest.approx(math.sqrt(8) * 0.1, rel=1e-5)
    assert verdicts[1].update_norm == pytest.approx(math.sqrt(8) * 0.2, rel=1e-5)


def _without(key):
    arrays = shifted(0.1)
    del arrays[key]
    return arrays


def _with(key, value):
    return {**shifted(0.1), key: value}


@pytest.mark.parametrize(
    ("arrays", "code"),
    [
        (_without("conv.bias"), "missing-keys"),
        (_with("extra.weight", np.zeros(2, np.float32)), "unexpected-keys"),
        (_with("conv.weight", np.zeros((3, 2), np.float32)), "shape-mismatch"),
        (_with("conv.weight", np.zeros((2, 3), np.float64)), "dtype-mismatch"),
        (_with("conv.bias", np.array([0.0, np.nan], np.float32)), "non-finite"),
        (_with("conv.bias", np.array([np.inf, 0.0], np.float32)), "non-finite"),
    ],
)
def test_arrays_that_do_not_fit_the_global_model_are_dropped(arrays, code):
    honest = content(shifted(0.1))
    assert judge(honest, content(arrays), honest) == [ACCEPTED, code, ACCEPTED]


@pytest.mark.parametrize("num_examples", [0, -5, 1e9, float("nan"), float("inf")])
def test_absurd_num_examples_are_dropped(num_examples):
    verdict = validate_replies([content(shifted(0.1), num_examples)], global_arrays(), LIMITS)[0]
    assert verdict.code == "bad-num-examples"
    assert "num-examples" in verdict.detail


def test_the_num_examples_maximum_is_configurable():
    assert judge(content(shifted(0.1), 5000), limits=ValidationLimits(max_num_examples=1000)) == [
        "bad-num-examples"
    ]
    assert judge(content(shifted(0.1), 5000)) == [ACCEPTED]


def test_a_non_finite_metric_is_dropped():
    assert judge(content(shifted(0.1), loss=float("nan"))) == ["non-finite"]
    assert judge(content(shifted(0.1), dice=[0.5, float("inf")])) == ["non-finite"]


def test_malformed_records_are_dropped_not_raised():
    arrays = ArrayRecord({k: Array(v) for k, v in shifted(0.1).items()})
    metrics = MetricRecord({"num-examples": 10})
    two_array_records = RecordDict({"a": arrays, "b": arrays, "metrics": metrics})
    no_metrics = RecordDict({"arrays": arrays})
    no_weight = RecordDict({"arrays": arrays, "metrics": MetricRecord({"loss": 1.0})})
    list_weight = RecordDict({"arrays": arrays, "metrics": MetricRecord({"num-examples": [1, 2]})})
    junk = Array(dtype="float32", shape=(2,), stype="numpy.ndarray", data=b"junk")
    garbage = ArrayRecord({**{k: Array(v) for k, v in shifted(0.1).items()}, "conv.bias": junk})
    undecodable = RecordDict({"arrays": garbage, "metrics": metrics})
    assert judge(two_array_records, no_metrics, no_weight, list_weight, undecodable) == ["malformed"] * 5


def test_a_far_larger_update_norm_is_an_outlier_among_three_or_more():
    replies = [content(shifted(d)) for d in (0.10, 0.12, 0.09, 5.0)]
    verdicts = validate_replies(replies, global_arrays(), LIMITS)
    assert [v.code for v in verdicts] == [ACCEPTED, ACCEPTED, ACCEPTED, "norm-outlier"]
    assert verdicts[3].update_norm == pytest.approx(math.sqrt(8) * 5.0, rel=1e-5)
    assert "median" in verdicts[3].detail


def test_the_norm_check_needs_three_replies():
    assert judge(content(shifted(0.1)), content(shifted(5.0))) == [ACCEPTED, ACCEPTED]


def test_rejected_replies_do_not_count_towards_the_norm_check():
    """Two valid replies plus one rejected one: still too few to call anything an outlier."""
    replies = [content(shifted(0.1)), content(shifted(5.0)), content(shifted(0.1), num_examples=0)]
    assert judge(*replies) == [ACCEPTED, ACCEPTED, "bad-num-examples"]


def test_the_outlier_factor_k_is_configurable():
    replies = [content(shifted(d)) for d in (0.10, 0.12, 0.09, 0.3)]
    # in units of sqrt(8): 0.3 is below median 0.11 + 5 * spread 0.055, but above 0.11 + 1 * 0.055
    assert judge(*replies)[-1] == ACCEPTED
    assert judge(*replies, limits=ValidationLimits(norm_outlier_k=1.0))[-1] == "norm-outlier"


def test_norm_threshold_is_robust_and_has_a_relative_floor():
    limits = ValidationLimits(norm_outlier_k=5.0, norm_min_spread=0.5)
    assert norm_threshold([1.0, 2.0], limits) is None
    # median 1.1, MAD 0.1 < 0.5 * 1.1, so the floor sets the spread: 1.1 + 5 * 0.55
    assert norm_threshold([1.0, 1.1, 100.0], limits) == pytest.approx(1.1 + 5 * 0.55)
    # identical norms (MAD 0) do not make a slightly larger honest one an outlier
    assert norm_threshold([1.0, 1.0, 1.0], ValidationLimits(norm_min_spread=0.1)) == pytest.approx(1.5)
    wide = [1.0, 3.0, 5.0, 7.0, 9.0]  # median 5, MAD 2 > 0.1 * 5, so the MAD sets the spread
    limits = ValidationLimits(norm_outlier_k=2.0, norm_min_spread=0.1)
    assert norm_threshold(wide, limits) == pytest.approx(5.0 + 2 * 2.0)


def test_update_norm_is_the_euclidean_distance_to_the_global_model():
    reference = {"a": np.zeros(2, np.float32), "b": np.array([1.0], np.float32)}
    assert update_norm({"a": np.array([3.0, 0.0], np.float32), "b": np.array([5.0], np.float32)},
                       reference) == pytest.approx(5.0)


def test_evaluate_replies_are_checked_without_arrays():
    def code(num_examples, **metrics):
        evaluate_reply = reply(None, num_examples, metrics=metrics).content
        return validate_metrics_reply(evaluate_reply, LIMITS, "num-examples").code

    assert code(20, dice=0.8) == ACCEPTED
    assert code(0) == "bad-num-examples"
    assert code(20, dice=float("nan")) == "non-finite"


@pytest.mark.parametrize("name", ["CT Hospital-1", "mr_t2.site", "A"])
def test_display_names_are_accepted(name):
    assert is_site_name(name)


@pytest.mark.parametrize("name", ["", "/data/site", "..\\site", "a/b", " lead", "x" * 65, 3, None])
def test_paths_and_odd_values_are_not_display_names(name):
    assert not is_site_name(name)


@pytest.mark.parametrize(
    "arguments", [{"max_num_examples": 0}, {"norm_outlier_k": -1.0}, {"norm_min_spread": -0.1}]
)
def test_limits_reject_nonsense(arguments):
    with pytest.raises(ValueError):
        ValidationLimits(**arguments)


# -- names: only the metric and config names the federation knows -----------------------------------

KEYS = ReplyKeys(labels=("disk",))  # a federation whose model segments one foreground label, "disk"
SCORES = {"dice", "hd95", "dice/disk", "hd95/disk"}


def with_metric(name: str) -> RecordDict:
    return reply(None, site="CT Hospital", metrics={name: 0.5}).content


@pytest.mark.parametrize("name", ["train-loss", "site-seconds", "epsilon", "dice", "hd95/disk", "before/dice",
                                  "after/hd95/disk", "personalised/dice/disk"])
def test_the_metric_names_sites_send_are_known(name):
    assert check_reply_keys(with_metric(name), KEYS) is None


@pytest.mark.parametrize("name", ["loss", "Patient^Jane Doe", "dice/kidney", "before/dice/kidney",
                                  "dice/background", "during/dice", "before/train-loss", "dice/disk/x",
                                  "personalised/num-examples", "DICE"])
def test_an_unknown_metric_name_drops_the_reply_without_repeating_it(name):
    verdict = check_reply_keys(with_metric(name), KEYS)
    assert verdict is not None and verdict.code == "unknown-key"
    assert name not in verdict.detail


def test_an_unknown_config_name_or_record_drops_the_reply():
    extra_key = reply(None, site="CT Hospital").content
    extra_key["site"]["referrer"] = "Dr. Who"
    extra_record = reply(None, site="CT Hospital").content
    extra_record["patient"] = ConfigRecord({"name": "Jane Doe"})
    he_site = reply(None, site="CT Hospital").content
    he_site["site"]["he-fingerprint"] = "0123abcd"
    fingerprint = RecordDict({"fingerprint": ConfigRecord({"fingerprint": "{}"}),
                              "site": ConfigRecord({"site-name": "CT Hospital"})})
    fingerprint_extra = RecordDict({"fingerprint": ConfigRecord({"fingerprint": "{}", "cases": "a, b"})})
    verdicts = [check_reply_keys(content, KEYS) for content in
                (extra_key, extra_record, he_site, fingerprint, fingerprint_extra)]
    assert [v.code if v else None for v in verdicts] == ["unknown-key", "unknown-key", None, None,
                                                         "unknown-key"]
    assert not any(word in verdict.detail for verdict in verdicts if verdict
                   for word in ("referrer", "patient", "cases"))


def test_per_label_names_are_those_of_the_model_the_server_sent():
    labels = {0: "background", 1: "liver", 2: "kidney"}
    training = TrainingConfig(plan=replace(PLAN, labels=labels), augmentation="none",
                              network=NetworkConfig(out_channels=3, channels=(8, 16)))
    keys = ReplyKeys.of_round(ConfigRecord({"model": model_to_json(training), "local-epochs": 1}))
    assert check_reply_keys(with_metric("after/dice/kidney"), keys) is None
    assert check_reply_keys(with_metric("hd95/liver"), keys) is None
    assert check_reply_keys(with_metric("dice/disk"), keys).code == "unknown-key"
    assert check_reply_keys(with_metric("dice/background"), keys).code == "unknown-key"  # never scored
    no_model = ReplyKeys.of_round(ConfigRecord({"local-epochs": 1}))
    assert check_reply_keys(with_metric("dice/kidney"), no_model).code == "unknown-key"
    assert check_reply_keys(with_metric("dice"), no_model) is None


def test_an_unknown_name_is_dropped_and_never_recorded_logged_or_shared_back(server_identity, caplog):
    canary = "Canary^Jane-7731"
    strategy = ValidatingFedAvg(min_train_nodes=1, min_available_nodes=1)
    arrays = ArrayRecord({key: Array(value) for key, value in global_arrays().items()})
    strategy.configure_train(1, arrays, ConfigRecord(), FakeGrid([1, 2, 3]))
    config_channel = reply(shifted(0.3), node_id=3, site="Third Site", metrics={"train-loss": 0.9})
    config_channel.content["site"][canary] = 1
    with caplog.at_level(logging.INFO):
        _, metrics = strategy.aggregate_train(1, [
            reply(shifted(0.1), node_id=1, site="CT Hospital", metrics={"train-loss": 0.5}),
            reply(shifted(0.2), node_id=2, site="MR Clinic", metrics={"train-loss": 0.7, canary: 1.0}),
            config_channel,
        ])
        strategy.aggregate_evaluate(1, [
            reply(None, node_id=2, site="MR Clinic", metrics={"dice": 0.4, canary: 2.0},
                  message_type=MessageType.EVALUATE)])
    records = strategy.history.records
    assert [(r.phase, r.site, r.status) for r in records] == [
        ("train", "CT Hospital", "accepted"), ("train", "MR Clinic", "unknown-key"),
        ("train", "Third Site", "unknown-key"), ("evaluate", "MR Clinic", "unknown-key")]
    assert dict(metrics) == {"train-loss": 0.5}  # the honest site's alone
    shared = shared_history_json(record.to_dict() for record in records)
    assert [record["metrics"] for record in json.loads(shared)] == [
        {"train-loss": 0.5}, {"train-loss": 0.7}, {"train-loss": 0.9}, {"dice": 0.4}]
    for text in (shared, metrics_jsonl(records), metrics_csv(records), caplog.text):
        assert canary not in text and canary.lower() not in text.lower()


@pytest.mark.usefixtures("case_cache")
def test_every_name_a_real_site_sends_is_accepted(server_identity, site_dir, tmp_path):
    """The real ClientApp answers the strategy's own messages: a train round, the final evaluation with a
    personalised fine-tune, and the fingerprint query; all are accepted with the names sites send today."""
    training = TrainingConfig(plan=PLAN, network=NetworkConfig(out_channels=2, channels=(8, 16)),
                              augmentation="none", batch_size=4)
    weights = ArrayRecord({name: Array(array) for name, array in
                           named_weights(SegmentationAlgorithm(training, device="cpu")).items()})
    settings = SiteSettings("CT Hospital", "ct", site_dir, tmp_path / "events.jsonl")
    site = Context(run_id=1, node_id=7, node_config=settings.to_node_config(), state=RecordDict(),
                   run_config={})
    strategy = ValidatingFedAvg(min_train_nodes=1, min_evaluate_nodes=1, min_available_nodes=1)
    config = ConfigRecord({"model": model_to_json(training), "local-epochs": 1})
    (train,) = strategy.configure_train(1, weights, config, FakeGrid([7]))
    strategy.aggregate_train(1, [client_app.app(train, site)])
    config["personalise-epochs"] = 1
    (evaluate,) = strategy.configure_evaluate(1, weights, config, FakeGrid([7]))
    strategy.aggregate_evaluate(1, [client_app.app(evaluate, site)])
    answer = client_app.app(fingerprint_queries([7])[0], site)

    scored = {f"{model}/{score}" for model in ("before", "after") for score in SCORES}
    personalised = {f"personalised/{score}" for score in SCORES}
    assert [(r.phase, r.status, set(r.metrics)) for r in strategy.history.records] == [
        ("train", "accepted", {"train-loss", "site-seconds"} | scored),
        ("evaluate", "accepted", SCORES | personalised),
    ]
    assert not answer.has_error() and check_reply_keys(answer.content, ReplyKeys()) is None
