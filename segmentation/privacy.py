"""Differentially private training (DP-SGD with Opacus) whose unit of privacy is one training slice.

Every step takes each of the site's N training slices independently with probability q = 1/steps (Poisson
sampling; steps = ceil(N / batch size), so an epoch takes each slice once on average), clips each slice's
gradient to max_grad_norm, adds Gaussian noise of noise_multiplier * max_grad_norm to their sum and divides
by the expected batch size N * q. Opacus's RDP accountant adds up what every step spends; its history,
(noise_multiplier, q, steps) triples, is plain numbers a site keeps across rounds and restarts.

The guarantee rests on which slices a batch takes and on the noise staying secret, so both come from the
operating system's entropy, never from the run's seed (which the server sends): DP training does not replay.
The slices are prepared per case (body box, intensity normalization) before they become records.
"""

from __future__ import annotations

import math
import secrets
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from opacus import GradSampleModule
from opacus.accountants import RDPAccountant
from opacus.grad_sample import register_grad_sampler
from opacus.optimizers import DPOptimizer
from opacus.utils.uniform_sampler import UniformWithReplacementSampler
from opacus.validators import ModuleValidator
from torch.utils.data import DataLoader

from segmentation.errors import ConfigError, PrivacyBudgetError
from segmentation.patches import SliceDataset
from segmentation.settings import PrivacySettings

History = list[tuple[float, float, int]]
Gradients = dict[torch.nn.Parameter, torch.Tensor]


@dataclass(frozen=True)
class PoissonSampling:
    """How DP-SGD draws an epoch from `records` slices at a batch size (Opacus's DPDataLoader's rule)."""

    records: int
    batch_size: int

    @property
    def steps(self) -> int:
        return math.ceil(self.records / self.batch_size)

    @property
    def rate(self) -> float:
        """The probability that a step takes any one slice."""
        return 1 / self.steps

    @property
    def expected_batch_size(self) -> float:
        return self.records * self.rate


class PrivateTraining:
    """DP-SGD for one model and its optimizer, and the privacy account of everything it trained.

    The model keeps its own state_dict (Opacus's per-sample gradient hooks sit on its layers) and the
    optimizer its own state, so weights and optimizer arrays travel as without DP.
    """

    def __init__(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer, settings: PrivacySettings,
                 batch_size: int) -> None:
        problems = ModuleValidator.validate(model, strict=False)
        if problems:
            raise ConfigError("differential privacy needs a network whose layers treat every sample apart "
                              f"(instance norm, not batch norm): {str(problems[0]).strip()}")
        self.settings, self.batch_size = settings, batch_size
        self.module = GradSampleModule(model)
        device = next(model.parameters()).device
        self.optimizer = DPOptimizer(
            optimizer, noise_multiplier=settings.noise_multiplier, max_grad_norm=settings.max_grad_norm,
            expected_batch_size=1, generator=torch.Generator(device).manual_seed(secrets.randbits(63)),
        )
        self.accountant = RDPAccountant()
        self._rate = 1.0

    # -- training ---------------------------------------------------------------------------------

    def loader(self, records: SliceDataset, num_workers: int = 0, pin_memory: bool = False) -> DataLoader:
        """Poisson-sampled batches of `records`, an epoch per pass; the steps that follow average and account
        at this sampling."""
        sampling = PoissonSampling(len(records), self.batch_size)
        sampler = UniformWithReplacementSampler(
            num_samples=sampling.records, sample_rate=sampling.rate, steps=sampling.steps,
            generator=torch.Generator().manual_seed(secrets.randbits(63)),
        )
        self.optimizer.expected_batch_size = sampling.expected_batch_size
        self._rate = sampling.rate
        return DataLoader(records, batch_sampler=sampler, collate_fn=records.collate, num_workers=num_workers,
                          pin_memory=pin_memory, generator=torch.Generator().manual_seed(records.epoch_seed))

    def step(self, loss: torch.Tensor | None, public: Sequence[torch.Tensor] | None = None) -> None:
        """One DP-SGD step from a batch's mean loss (None for a batch that took no slice: the step still
        adds noise, as the accounting assumes). `public`, one tensor per parameter in the model's order, is
        the gradient of a term that reads no data (FedProx's pull): it joins after the noise, since it needs
        no privacy."""
        self.optimizer.zero_grad(set_to_none=True)
        if loss is None:
            for parameter in self.optimizer.params:
                parameter.grad_sample = parameter.new_zeros((0, *parameter.shape))
        else:
            with warnings.catch_warnings():  # Opacus's hooks need no gradient of the input
                warnings.filterwarnings("ignore", "Full backward hook is firing", UserWarning)
                loss.backward()
        self.optimizer.pre_step()  # clip every slice's gradient, sum, add noise, divide
        for parameter, gradient in zip(self.optimizer.params, public or (), strict=public is not None):
            parameter.grad.add_(gradient)
        self.optimizer.original_optimizer.step()
        self.accountant.step(noise_multiplier=self.settings.noise_multiplier, sample_rate=self._rate)

    # -- the privacy account ----------------------------------------------------------------------

    def epsilon_spent(self, delta: float | None = None) -> float:
        """The epsilon all accounted training has spent, at `delta` (the settings' by default)."""
        return float(self.accountant.get_epsilon(self.settings.delta if delta is None else delta))

    def epsilon_after(self, records: int, epochs: int, delta: float | None = None) -> float:
        """The epsilon spent once `epochs` more epochs on `records` slices are trained, without training
        them."""
        sampling = PoissonSampling(records, self.batch_size)
        planned = RDPAccountant()
        planned.history = [*self.accountant.history,
                           (self.settings.noise_multiplier, sampling.rate, epochs * sampling.steps)]
        return float(planned.get_epsilon(self.settings.delta if delta is None else delta))

    def check_budget(self, records: int, epochs: int) -> None:
        """PrivacyBudgetError when `epochs` more epochs on `records` slices would spend more than the
        budget."""
        after, budget = self.epsilon_after(records, epochs), self.settings.epsilon_budget
        if after > budget:
            raise PrivacyBudgetError(
                f"training {epochs} more epoch{'s' * (epochs != 1)} would spend epsilon {after:.2f}, beyond "
                f"this site's budget of {budget:g} (spent so far: {self.epsilon_spent():.2f})"
            )

    def state(self) -> History:
        """The accountant's history as plain numbers: (noise_multiplier, sample rate, steps) per stretch."""
        return [(float(noise), float(rate), int(steps)) for noise, rate, steps in self.accountant.history]

    def load_state(self, history: Sequence[Sequence[float]]) -> None:
        """Continue the account of state(); a ConfigError, changing nothing, when an entry is not a noise
        multiplier above 0, a rate in (0, 1] and a whole number of steps."""
        entries = [tuple(entry) for entry in history]
        for entry in entries:
            numbers = len(entry) == 3 and all(isinstance(v, (int, float)) and math.isfinite(v) for v in entry)
            if not (numbers and entry[0] > 0 and 0 < entry[1] <= 1 and entry[2] >= 0 and entry[2] % 1 == 0):
                raise ConfigError(f"the kept privacy account holds {list(entry)!r}, which is not "
                                  "(noise multiplier, sample rate, steps)")
        self.accountant.history = [(float(noise), float(rate), int(steps)) for noise, rate, steps in entries]


# -- per-sample gradients of the U-Net's layers that Opacus leaves to torch.func ---------------------------
# Opacus computes them by vmap, which makes a DP step of the demo's U-Net a fifth slower (bench/dp_step.py,
# CPU: 2.5x a plain step against 2.05x). These closed forms follow Opacus's grad sampler contract: the
# layer's inputs and the gradient of its output, for the whole batch, give each parameter's gradient per
# sample; a test holds them to Opacus's own vmap results.

@register_grad_sampler(torch.nn.PReLU)
def _prelu_gradients(
    layer: torch.nn.PReLU, activations: list[torch.Tensor], backprops: torch.Tensor
) -> Gradients:
    """d output / d slope is the input where it is negative, summed per channel (or over all of them)."""
    inputs = activations[0]
    per_element = backprops * torch.clamp(inputs, max=0)
    gradient = per_element.reshape(len(inputs), layer.num_parameters, -1).sum(-1)
    return {layer.weight: gradient.view(len(inputs), *layer.weight.shape)}


@register_grad_sampler(torch.nn.ConvTranspose2d)
def _transposed_convolution_gradients(
    layer: torch.nn.ConvTranspose2d, activations: list[torch.Tensor], backprops: torch.Tensor
) -> Gradients:
    """Weight[i, o, kh, kw] meets input pixel (h, w) at output pixel (h * stride - padding + k * dilation):
    unfolding the output's gradient with the layer's geometry lines those up with the input's pixels."""
    inputs, groups = activations[0], layer.groups
    n = len(inputs)
    unfolded = F.unfold(backprops, layer.kernel_size, dilation=layer.dilation, padding=layer.padding,
                        stride=layer.stride)  # (n, out * kh * kw, input pixels)
    unfolded = unfolded.view(n, groups, layer.out_channels // groups, -1, unfolded.shape[-1])
    weight = torch.einsum("ngil,ngokl->ngiok", inputs.reshape(n, groups, -1, unfolded.shape[-1]), unfolded)
    gradients = {layer.weight: weight.reshape(n, *layer.weight.shape)}
    if layer.bias is not None:
        gradients[layer.bias] = backprops.flatten(2).sum(-1)
    return gradients
