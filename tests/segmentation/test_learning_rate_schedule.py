"""Learning-rate schedules of local training."""

import pytest

from segmentation.errors import ConfigError
from segmentation.plan import Plan
from segmentation.settings import NetworkConfig, TrainingConfig, learning_rate_schedule

PLAN = Plan(labels={0: "background", 1: "x"}, spatial_dims=2, target_spacing=(1, 1, 1), patch_size=(16, 16))


def _config(**changes) -> TrainingConfig:
    return TrainingConfig(plan=PLAN, network=NetworkConfig(channels=(8, 16)), learning_rate=0.01, **changes)


def test_constant_schedule_keeps_the_rate():
    assert learning_rate_schedule(_config(), 5) == [0.01] * 5


def test_cosine_schedule_starts_at_the_rate_and_decays_towards_zero():
    rates = learning_rate_schedule(_config(learning_rate_schedule="cosine"), 100)
    assert rates[0] == pytest.approx(0.01)
    assert rates[50] == pytest.approx(0.005)
    assert all(later < earlier for earlier, later in zip(rates, rates[1:], strict=False))
    assert 0.0 < rates[-1] < 1e-5


def test_unknown_schedule_is_a_config_error():
    with pytest.raises(ConfigError, match="learning_rate_schedule 'step' is unknown"):
        _config(learning_rate_schedule="step")
