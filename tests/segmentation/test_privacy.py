"""Differentially private training: settings, slices as records, DP-SGD's clipping and noise, the privacy
account across calls and restarts, and the budget, on the tiny disk phantoms of test_algorithm.

Expected values come from elsewhere than the code under test: per-sample gradients from plain autograd one
slice at a time, epsilons from Opacus's RDPAccountant fed the steps counted by hand, per-sample gradients of
our layer formulas from Opacus's own torch.func fallback.
"""

import json
from copy import deepcopy
from dataclasses import replace

import numpy as np
import pytest
import torch
from monai.losses import DiceCELoss
from opacus import GradSampleModule
from opacus.accountants import RDPAccountant
from test_algorithm import _config, _parameters, disk_plan, one_torch_thread, write_disk_dataset  # noqa: F401

from segmentation.algorithm import SegmentationAlgorithm
from segmentation.case_cache import CachedCase
from segmentation.errors import ConfigError, PrivacyBudgetError
from segmentation.patches import SliceDataset
from segmentation.privacy import PrivateTraining
from segmentation.settings import NetworkConfig, PrivacySettings

# The disks: 4 training cases of 4 slices, batch 4 -> 16 records, 4 steps an epoch, each taking a slice
# with probability 1/4.
SLICES, STEPS_PER_EPOCH, RATE = 16, 4, 0.25
NOISE = 1.1
DP = PrivacySettings(dp=True, noise_multiplier=NOISE, epsilon_budget=1e6)


@pytest.fixture(scope="module")
def disks(tmp_path_factory):
    return write_disk_dataset(tmp_path_factory.mktemp("disks"), training=4, test=1)


def _private(tmp_path, privacy: PrivacySettings = DP, **changes) -> SegmentationAlgorithm:
    return SegmentationAlgorithm(_config(tmp_path, **changes), device="cpu", privacy=privacy)


def _opacus_epsilon(history, delta: float = 1e-5) -> float:
    accountant = RDPAccountant()
    accountant.history = list(history)
    return accountant.get_epsilon(delta)


# -- settings -------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("field", "value", "message"), [
    ("noise_multiplier", 0.0, "privacy noise_multiplier must be a number above 0 (no noise gives no "),
    ("max_grad_norm", -1.0, "privacy max_grad_norm must be a number above 0, got -1.0"),
    ("max_grad_norm", float("inf"), "privacy max_grad_norm must be a number above 0, got inf"),
    ("delta", 1.0, "privacy delta must lie between 0 and 1, got 1.0"),
    ("delta", float("nan"), "privacy delta must lie between 0 and 1, got nan"),
    ("epsilon_budget", 0, "privacy epsilon_budget must be a number above 0, got 0"),
])
def test_out_of_range_privacy_settings_are_refused_in_one_sentence(field, value, message):
    with pytest.raises(ConfigError) as raised:
        PrivacySettings(**{field: value})
    assert str(raised.value).startswith(message) and "\n" not in str(raised.value)


def test_dp_refuses_training_that_could_not_keep_its_guarantee(tmp_path):
    with pytest.raises(ConfigError, match="needs a 2D plan, since its unit of privacy is one slice"):
        _private(tmp_path, network=NetworkConfig(spatial_dims=3, out_channels=2, channels=(4, 8)),
                 plan=disk_plan((4, 16, 16)))
    for augmentation in ("fourier", "dsn"):
        with pytest.raises(ConfigError, match=f"augmentation '{augmentation}' mixes samples' data"):
            _private(tmp_path, augmentation=augmentation)
    with pytest.raises(ConfigError, match="instance norm, not batch norm"):
        _private(tmp_path, network=NetworkConfig(out_channels=2, channels=(8, 16), norm="batch"))
    plain = SegmentationAlgorithm(_config(tmp_path, augmentation="fourier"), device="cpu",
                                  privacy=replace(DP, dp=False))
    assert plain.privacy is None
    with pytest.raises(ConfigError, match="without differential privacy"):
        plain.epsilon_after([], 1)


# -- records --------------------------------------------------------------------------------------------

def test_each_record_is_one_slice_and_holds_nothing_of_the_others():
    depth = 5
    image = np.broadcast_to(np.arange(1, depth + 1, dtype=np.float32)[:, None, None], (depth, 20, 24)).copy()
    label = np.zeros((depth, 20, 24), np.uint8)
    label[:, 5:9, 5:9] = 1
    records = SliceDataset([CachedCase("a", "ct", image, label), CachedCase("b", "mr", image + 10, label)],
                           (16, 16), foreground_oversampling=0.5)
    assert len(records) == records.samples_per_epoch == 2 * depth
    for index in range(len(records)):
        patch, labels, modality = records[index]
        assert patch.shape == labels.shape == (1, 16, 16)
        assert set(patch.unique().tolist()) == {float(index + 1 if index < depth else index - depth + 11)}
        assert modality == ("ct" if index < depth else "mr")
    images, labels, modalities = records.collate([])
    assert images.shape == (0, 1, 16, 16) and labels.dtype == torch.uint8 and modalities == []


# -- DP-SGD's step ---------------------------------------------------------------------------------------

def _network() -> torch.nn.Module:
    """A small U-Net (PReLU, transposed convolutions), the same every time."""
    with torch.random.fork_rng():
        torch.manual_seed(3)
        return NetworkConfig(out_channels=2, channels=(16, 32)).build()


def _step_setup(noise: float, clipping: float):
    """The small U-Net under DP-SGD with plain SGD at rate 1, so an update is minus the gradient DP-SGD
    hands the optimizer; 12 records at batch 4 expect 4 a batch."""
    model = _network()
    settings = PrivacySettings(dp=True, noise_multiplier=noise, max_grad_norm=clipping)
    private = PrivateTraining(model, torch.optim.SGD(model.parameters(), lr=1.0), settings, batch_size=4)
    zeros = np.zeros((12, 16, 16), np.float32)
    private.loader(SliceDataset([CachedCase("a", "ct", zeros, zeros.astype(np.uint8))], (16, 16), 0.0))
    return model, private


def test_each_slice_gradient_is_clipped_before_the_sum_is_averaged():
    clipping = 1e-3
    model, private = _step_setup(noise=1e-12, clipping=clipping)
    loss_function = DiceCELoss(to_onehot_y=True, softmax=True)
    generator = torch.Generator().manual_seed(0)
    images = torch.randn((3, 1, 16, 16), generator=generator)
    labels = (torch.rand((3, 1, 16, 16), generator=generator) > 0.5).long()
    reference = _network()  # without Opacus's hooks
    expected = [torch.zeros_like(p) for p in reference.parameters()]
    for image, label in zip(images, labels, strict=True):  # plain autograd, one slice at a time
        loss = loss_function(reference(image[None]), label[None])
        gradients = torch.autograd.grad(loss, list(reference.parameters()))
        norm = torch.sqrt(sum(torch.sum(g ** 2) for g in gradients))
        assert norm > 10 * clipping  # so every slice is clipped
        for total, gradient in zip(expected, gradients, strict=True):
            total += gradient * (clipping / norm) / 4  # the expected batch, not the 3 drawn
    parameters = list(model.parameters())
    public = [torch.full_like(p, 0.5) for p in parameters]
    before = [p.detach().clone() for p in parameters]

    private.step(loss_function(private.module(images), labels), public)

    for old, new, gradient, pull in zip(before, parameters, expected, public, strict=True):
        torch.testing.assert_close(old - new.detach(), gradient + pull, rtol=1e-4, atol=1e-9)
    update = [old - new.detach() - 0.5 for old, new in zip(before, parameters, strict=True)]
    assert torch.sqrt(sum(torch.sum(change ** 2) for change in update)) <= 3 * clipping / 4 * (1 + 1e-4)


def test_a_batch_that_drew_no_slice_steps_on_noise_of_the_set_scale():
    model, private = _step_setup(noise=2.0, clipping=0.5)
    before = torch.cat([p.detach().flatten() for p in model.parameters()])
    private.step(None)
    update = before - torch.cat([p.detach().flatten() for p in model.parameters()])
    # N(0, (noise * clipping)^2) per coordinate, over the expected batch of 4: std 0.25.
    assert abs(float(update.std()) - 2.0 * 0.5 / 4) < 0.025 and abs(float(update.mean())) < 0.025
    assert private.state() == [(2.0, 1 / 3, 1)]


def test_our_per_sample_gradients_of_prelu_and_transposed_convolutions_match_opacus_own():
    with torch.random.fork_rng():
        torch.manual_seed(5)
        layers = torch.nn.Sequential(  # both PReLU forms; a grouped transposed convolution, output padding
            torch.nn.ConvTranspose2d(4, 6, 3, stride=2, padding=1, output_padding=1, groups=2),
            torch.nn.PReLU(6), torch.nn.ConvTranspose2d(6, 3, 2, stride=2, bias=False), torch.nn.PReLU(),
        )
        networks = {"ours": NetworkConfig(out_channels=3, channels=(4, 8)).build(), "layers": layers}
        inputs = {"ours": torch.randn(3, 1, 16, 16), "layers": torch.randn(3, 4, 5, 7)}
    for name, network in networks.items():
        samples = {}
        for functorch in (False, True):
            copy = deepcopy(network)
            GradSampleModule(copy, force_functorch=functorch)(inputs[name]).pow(2).mean().backward()
            samples[functorch] = [p.grad_sample for p in copy.parameters()]
        for ours, theirs in zip(samples[False], samples[True], strict=True):
            torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-6)


# -- training and the account ---------------------------------------------------------------------------

def test_dp_training_changes_the_weights_and_accounts_every_step(disks, tmp_path):
    global_rng = torch.get_rng_state()
    algorithm = _private(tmp_path, augmentation="gin")
    start = _parameters(algorithm)
    assert algorithm.privacy.epsilon_spent() == 0
    result = algorithm.train(disks, epochs=2)
    assert torch.equal(torch.get_rng_state(), global_rng)
    assert result.epochs == 2 and result.num_examples == SLICES and np.isfinite(result.loss)
    assert not torch.allclose(_parameters(algorithm), start)
    history = [(NOISE, RATE, 2 * STEPS_PER_EPOCH)]
    assert algorithm.privacy.state() == history
    assert algorithm.privacy.epsilon_spent() == pytest.approx(_opacus_epsilon(history), rel=1e-12)
    assert algorithm.privacy.epsilon_spent(1e-3) == pytest.approx(_opacus_epsilon(history, 1e-3), rel=1e-12)
    # The noise and the batches are secret: the run's seed (which the server knows) does not replay them.
    again = _private(tmp_path, augmentation="gin")
    again.train(disks, epochs=2)
    assert not torch.allclose(_parameters(again), _parameters(algorithm))


def test_the_account_survives_a_restart_as_plain_numbers_and_goes_on(disks, tmp_path):
    first = _private(tmp_path)
    first.train(disks, epochs=1)
    kept = json.loads(json.dumps(first.privacy.state()))  # what a site writes to its JSON file
    restarted = _private(tmp_path)
    restarted.privacy.load_state(kept)
    assert restarted.privacy.epsilon_spent() == first.privacy.epsilon_spent() > 0
    restarted.train(disks, epochs=1)
    history = [(NOISE, RATE, 2 * STEPS_PER_EPOCH)]
    assert restarted.privacy.state() == history
    assert restarted.privacy.epsilon_spent() == pytest.approx(_opacus_epsilon(history), rel=1e-12)
    for damaged in ([[NOISE, RATE]], [[NOISE, 1.5, 4]], [[0.0, RATE, 4]], [[NOISE, RATE, 2.5]],
                    [["1", RATE, 4]]):
        with pytest.raises(ConfigError, match="is not \\(noise multiplier, sample rate, steps\\)"):
            restarted.privacy.load_state(damaged)
    assert restarted.privacy.state() == history


def test_the_forecast_equals_what_training_then_reports_and_the_budget_refuses_more(disks, tmp_path):
    after_one, after_three = (_opacus_epsilon([(NOISE, RATE, epochs * STEPS_PER_EPOCH)]) for epochs in (1, 3))
    algorithm = _private(tmp_path, privacy=replace(DP, epsilon_budget=(after_one + after_three) / 2))
    forecast = algorithm.epsilon_after(disks, 1)
    assert forecast == pytest.approx(after_one, rel=1e-12)
    algorithm.train(disks, epochs=1)
    assert algorithm.privacy.epsilon_spent() == pytest.approx(forecast, rel=1e-12)
    assert algorithm.epsilon_after(disks, 2) == pytest.approx(after_three, rel=1e-12)

    weights = _parameters(algorithm)
    refusal = f"training 2 more epochs would spend epsilon {after_three:.2f}, beyond this site's budget"
    with pytest.raises(PrivacyBudgetError, match=refusal):
        algorithm.train(disks, epochs=2)
    torch.testing.assert_close(_parameters(algorithm), weights)
    assert algorithm.privacy.state() == [(NOISE, RATE, STEPS_PER_EPOCH)] and algorithm.epoch == 1


def test_fedprox_pulls_towards_the_starting_weights_beside_the_noise(disks, tmp_path, monkeypatch):
    mu = 0.5
    algorithm = _private(tmp_path, proximal_mu=mu)
    start = [p.detach().clone() for p in algorithm.model.parameters()]
    pulls = []
    real_step = PrivateTraining.step

    def spy(self, loss, public=None):
        expected = [mu * (p.detach() - s) for p, s in zip(algorithm.model.parameters(), start, strict=True)]
        pulls.append((public, expected))
        real_step(self, loss, public)

    monkeypatch.setattr(PrivateTraining, "step", spy)
    algorithm.train(disks, epochs=1)
    assert len(pulls) == STEPS_PER_EPOCH
    assert any(float(torch.linalg.vector_norm(e)) > 0 for e in pulls[-1][1])
    for public, expected in pulls:
        for given, wanted in zip(public, expected, strict=True):
            torch.testing.assert_close(given, wanted)
