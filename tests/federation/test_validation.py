"""Reply validation: every kind of bad site data gets its reason code, honest replies pass."""

import math

import numpy as np
import pytest
from fed_replies import global_arrays, reply, shifted
from flwr.app import Array, ArrayRecord, MetricRecord, RecordDict

from federation.validation import (
    ACCEPTED,
    ValidationLimits,
    is_site_name,
    norm_threshold,
    update_norm,
    validate_metrics_reply,
    validate_replies,
)

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
