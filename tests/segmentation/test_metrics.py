"""Dice and HD95 against cases small enough to compute by hand."""

import math

import numpy as np
import pytest

from segmentation.metrics import dice_per_label, hd95_per_label, score_case, summarize


def _squares() -> tuple[np.ndarray, np.ndarray]:
    truth = np.zeros((1, 10, 10), np.uint8)
    truth[0, 2:5, 2:5] = 1
    prediction = np.zeros_like(truth)
    prediction[0, 2:5, 3:6] = 1  # shifted one column: 6 of 9 pixels overlap
    return prediction, truth


def test_dice_of_overlapping_squares_and_empty_labels():
    prediction, truth = _squares()
    prediction[0, 8, 8] = 3  # label 3 predicted but absent from the truth
    scores = dice_per_label(prediction, truth, [1, 2, 3])
    assert scores[1] == pytest.approx(2 * 6 / (9 + 9))
    assert scores[2] == 1.0  # absent from both: nothing to find, nothing found
    assert scores[3] == 0.0


def test_hd95_of_single_voxels_uses_per_axis_spacing():
    truth = np.zeros((3, 4, 5), np.uint8)
    prediction = np.zeros_like(truth)
    truth[0, 0, 0] = 1
    prediction[2, 3, 4] = 1
    distance = hd95_per_label(prediction, truth, [1], spacing=(2.0, 1.0, 0.5))[1]
    assert distance == pytest.approx(math.sqrt((2 * 2.0) ** 2 + (3 * 1.0) ** 2 + (4 * 0.5) ** 2))


def test_hd95_ignores_a_single_outlier_that_the_maximum_would_not():
    truth = np.zeros((3, 5, 40), np.uint8)
    truth[1, 2, :20] = 1
    prediction = truth.copy()
    prediction[1, 2, 39] = 1  # 1 of 21 predicted voxels lies 20 voxels away
    assert hd95_per_label(prediction, truth, [1], spacing=(1.0, 1.0, 1.0))[1] == pytest.approx(0.0, abs=1e-3)
    prediction[1, 2, 30:40] = 1  # now a third of the prediction is far: the 95th percentile sees it
    assert hd95_per_label(prediction, truth, [1], spacing=(1.0, 1.0, 1.0))[1] > 10.0


def test_hd95_of_empty_structures_is_zero_or_the_field_of_view_diagonal():
    truth = np.zeros((2, 4, 8), np.uint8)
    truth[0, 1, 1] = 1
    prediction = np.zeros_like(truth)
    distances = hd95_per_label(prediction, truth, [1, 2], spacing=(2.0, 1.0, 0.5))
    assert distances[2] == 0.0
    assert distances[1] == pytest.approx(math.sqrt(4.0**2 + 4.0**2 + 4.0**2))  # (2*2, 4*1, 8*0.5) mm


def test_score_case_names_labels_skips_background_and_reverses_sitk_spacing():
    prediction, truth = _squares()
    labels = {0: "background", 1: "liver", 2: "spleen"}
    scores = score_case("case_1", prediction, truth, labels, spacing_xyz=(2.0, 1.0, 5.0))
    assert set(scores.dice) == set(scores.hd95) == {"liver", "spleen"}
    assert scores.dice["liver"] == pytest.approx(2 / 3)
    # Every pixel of a one-slice mask is an edge; x is the shifted axis, 2 mm per column: the
    # predicted column 5 lies 1 column from the truth, column 3..4 lie on it.
    assert scores.hd95["liver"] == pytest.approx(2.0)


def test_summarize_averages_per_label_over_cases_and_flattens_metrics():
    prediction, truth = _squares()
    labels = {0: "background", 1: "liver", 2: "spleen"}
    perfect = score_case("a", truth, truth, labels, (1.0, 1.0, 1.0))
    shifted = score_case("b", prediction, truth, labels, (1.0, 1.0, 1.0))
    result = summarize([perfect, shifted])
    assert result.label_dice["liver"] == pytest.approx((1.0 + 2 / 3) / 2)
    assert result.label_dice["spleen"] == 1.0
    assert result.dice == pytest.approx((result.label_dice["liver"] + 1.0) / 2)
    assert result.metrics["dice/liver"] == result.label_dice["liver"]
    assert result.metrics["hd95"] == pytest.approx(result.hd95)
    assert [case.case_id for case in result.cases] == ["a", "b"]


def test_mismatched_shapes_are_rejected():
    with pytest.raises(ValueError, match="shape"):
        dice_per_label(np.zeros((1, 2, 3)), np.zeros((1, 3, 2)), [1])
    with pytest.raises(ValueError, match="spacing"):
        hd95_per_label(np.zeros((1, 2, 3)), np.zeros((1, 2, 3)), [1], spacing=(1.0, 1.0))
