"""Learning-rate schedules of local training."""

import pytest

from segmentation.errors import ConfigError
from segmentation.network import NetworkConfig
from segmentation.preprocessing import Preprocessing
from segmentation.training import TrainingConfig, learning_rate_schedule


def _config(**changes) -> TrainingConfig:
    return TrainingConfig(network=NetworkConfig(channels=(8, 16)), preprocessing=Preprocessing((16, 16)),
                          learning_rate=0.01, **changes)


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
