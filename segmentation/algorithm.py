"""The framework-neutral training algorithm: train / evaluate / get_weights / set_weights.

Shaped like MONAI's federated ClientAlgo so that the CLI, the GUI and the Flower ClientApp drive the
same object: a federation adapter only moves weight lists and metric dicts in and out of it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from monai.losses import DiceCELoss
from torch.utils.data import DataLoader

from segmentation.case_cache import CaseCache, default_cache_dir
from segmentation.checkpoint import Checkpoint
from segmentation.datalist import CaseEntry, DatasetIndex
from segmentation.errors import CheckpointError, ConfigError, first_line
from segmentation.events import EventWriter
from segmentation.inference import segment
from segmentation.io import read_labeled_pair, read_volume
from segmentation.metrics import EvaluationResult, score_case, summarize
from segmentation.network import default_device
from segmentation.patches import PatchDataset, SliceDataset, make_loader
from segmentation.settings import PrivacySettings, TrainingConfig, TrainResult, learning_rate_schedule
from segmentation.transforms import ModalityStatistics, build_batch_augmentation
from segmentation.volume import Volume, normalize_modality

if TYPE_CHECKING:
    from segmentation.privacy import PrivateTraining

# Fields of a checkpoint that define the model; from_checkpoint may not override them.
_MODEL_FIELDS = ("network", "plan", "augmentation")


def _derived_seed(*parts: int) -> int:
    """A well-mixed 31-bit seed per (run seed, epoch, purpose), so resumed runs replay the same draws."""
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(1)[0] & 0x7FFFFFFF)


class SegmentationAlgorithm:
    """A U-Net, its AdamW optimizer and Dice+CE loss, trained on labelled cases.

    `epoch` counts completed epochs over the object's life (and across checkpoints); `history`
    holds one record per epoch with its mean loss and validation metrics. Given PrivacySettings with dp on,
    it trains with DP-SGD, one training slice being the unit of privacy, and `privacy` keeps the account of
    what that training spent (segmentation.privacy); otherwise `privacy` is None.
    """

    def __init__(
        self, config: TrainingConfig, device: torch.device | str | None = None, *,
        privacy: PrivacySettings | None = None,
    ) -> None:
        labels = config.plan.labels
        if sorted(labels) != list(range(config.network.out_channels)):
            raise ConfigError(
                f"labels {sorted(labels)} must be 0..{config.network.out_channels - 1}, "
                "one per network output"
            )
        self.config = config
        self.device = torch.device(device) if device is not None else default_device()
        with torch.random.fork_rng(devices=[]):  # seeded weights without touching the caller's RNG
            torch.manual_seed(config.seed)
            self.model = config.network.build().to(self.device)
        self.optimizer = torch.optim.AdamW(
            self.model.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay
        )
        self.loss_function = DiceCELoss(to_onehot_y=True, softmax=True)
        self.privacy: PrivateTraining | None = None
        if privacy is not None and privacy.dp:
            privacy.check_training(config)
            from segmentation.privacy import PrivateTraining  # Opacus loads only for private training

            self.privacy = PrivateTraining(self.model, self.optimizer, privacy, config.batch_size)
        self.epoch = 0
        self.history: list[dict[str, Any]] = []
        self.train_modalities: set[str] = set()
        self._data: tuple[Any, PatchDataset] | None = None

    @property
    def labels(self) -> dict[int, str]:
        return self.config.plan.labels

    # -- training ---------------------------------------------------------------------------------

    def train(
        self,
        dataset: DatasetIndex | Sequence[CaseEntry],
        epochs: int,
        events: EventWriter | None = None,
        stop: Callable[[], bool] | None = None,
        *,
        validation: Sequence[CaseEntry] = (),
        on_epoch: Callable[[int], None] | None = None,
    ) -> TrainResult:
        """Train `epochs` more epochs on the labelled cases (a DatasetIndex's training split).

        Emits "progress" after every step and "epoch" after every epoch (with the validation
        metrics when `validation` cases are given); on_epoch(epoch) runs after each epoch is
        recorded, e.g. to save a checkpoint. stop() is checked before every step: when it turns
        true the epoch is abandoned (not counted) and the result says stopped. Under DP a
        PrivacyBudgetError refuses, before any step, epochs that would spend more than the budget; the steps
        of an abandoned epoch stay spent.
        """
        if epochs < 0:
            raise ConfigError(f"epochs must be zero or more, got {epochs}")
        cases = _labelled(dataset.training if isinstance(dataset, DatasetIndex) else dataset)
        if self.config.augmentation == "dsn":
            self._fit_modality_statistics(cases)
        data = self._training_data(cases)
        loader = self._loader(data, epochs)
        self.train_modalities.update(normalize_modality(case.modality) for case in cases)
        target, anchor = self.epoch + epochs, self._proximal_anchor()
        schedule = learning_rate_schedule(self.config, epochs * len(loader))
        loss, metrics, completed = float("nan"), {}, 0
        for index in range(epochs):
            epoch = self.epoch + 1
            data.set_epoch_seed(_derived_seed(self.config.seed, epoch, 0))
            rates = schedule[index * len(loader):(index + 1) * len(loader)]
            epoch_loss = self._run_epoch(loader, epoch, target, anchor, rates, events, stop)
            if epoch_loss is None:
                return TrainResult(completed, self.epoch, loss, data.samples_per_epoch, True, metrics)
            loss = epoch_loss
            metrics = self.evaluate(validation).metrics if validation else {}
            self.epoch = epoch
            self.history.append({"epoch": epoch, "loss": loss, **metrics})
            if events is not None:
                events.emit("epoch", epoch=epoch, loss=loss, metrics=metrics)
            if on_epoch is not None:
                on_epoch(epoch)
            completed += 1
        return TrainResult(completed, self.epoch, loss, data.samples_per_epoch, False, metrics)

    def _run_epoch(
        self, loader: DataLoader, epoch: int, target: int, anchor: list[torch.Tensor] | None,
        rates: Sequence[float], events: EventWriter | None, stop: Callable[[], bool] | None,
    ) -> float | None:
        """One pass over the loader at the given per-step learning rates; its mean loss, or None when
        stop() interrupted it."""
        seed = _derived_seed(self.config.seed, epoch, 1)
        augment = build_batch_augmentation(
            self.config.augmentation, seed=seed, prob=self.config.augmentation_probability
        )
        self.model.train()
        losses, steps = [], len(loader)
        for step, ((images, labels, _), rate) in enumerate(zip(loader, rates, strict=True), start=1):
            if stop is not None and stop():
                return None
            for group in self.optimizer.param_groups:
                group["lr"] = rate
            value = self._step(images, labels, augment, anchor)
            if value is None:
                continue
            losses.append(value)
            if events is not None:
                events.emit("progress", epoch=epoch, epochs=target, step=step, steps=steps, loss=value)
        return sum(losses) / len(losses) if losses else float("nan")

    def _step(
        self, images: torch.Tensor, labels: torch.Tensor,
        augment: Callable[[torch.Tensor], torch.Tensor] | None, anchor: list[torch.Tensor] | None,
    ) -> float | None:
        """One optimisation step and its loss; the single .item() is the only host sync. None only under DP,
        for a batch that took no slice."""
        images = images.to(self.device, non_blocking=True)
        labels = labels.to(self.device, non_blocking=True).long()
        if self.privacy is not None:
            return self._private_step(self.privacy, images, labels, augment, anchor)
        if augment is not None:
            with torch.no_grad():
                images = augment(images)
        loss = self.loss_function(self.model(images), labels)
        if anchor is not None:
            drift = sum(torch.sum((p - a) ** 2) for p, a in zip(self.model.parameters(), anchor, strict=True))
            loss = loss + 0.5 * self.config.proximal_mu * drift
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return loss.item()

    def _private_step(
        self, privacy: PrivateTraining, images: torch.Tensor, labels: torch.Tensor,
        augment: Callable[[torch.Tensor], torch.Tensor] | None, anchor: list[torch.Tensor] | None,
    ) -> float | None:
        """DP-SGD's step; a batch that took no slice steps on noise alone and has no loss. FedProx's pull
        reads no data, so its gradient joins after the clipping and the noise."""
        penalty, pull = torch.zeros((), device=self.device), None
        if anchor is not None:
            drift = [p.detach() - a for p, a in zip(self.model.parameters(), anchor, strict=True)]
            penalty = 0.5 * self.config.proximal_mu * sum(torch.sum(d ** 2) for d in drift)
            pull = [self.config.proximal_mu * d for d in drift]
        if len(images) == 0:
            privacy.step(None, pull)
            return None
        if augment is not None:
            with torch.no_grad():
                images = augment(images)
        loss = self.loss_function(privacy.module(images), labels)
        privacy.step(loss, pull)
        return (loss.detach() + penalty).item()

    def _proximal_anchor(self) -> list[torch.Tensor] | None:
        """FedProx's reference point: the weights as they are when train() starts."""
        if self.config.proximal_mu == 0:
            return None
        return [p.detach().clone() for p in self.model.parameters()]

    def _training_data(self, cases: Sequence[CaseEntry]) -> PatchDataset | SliceDataset:
        """The cases' patches (under DP their slices, one record each), kept in memory between train() calls
        on the same cases and plan."""
        key = (tuple(cases), self.config.plan, self.config.batch_size, self.config.foreground_oversampling)
        if self._data is None or self._data[0] != key:
            cache = CaseCache(self.config.cache_dir or default_cache_dir(), self.config.plan)
            loaded, patch = [cache.load(case) for case in cases], self.config.plan.patch_size
            oversampling, seed = self.config.foreground_oversampling, self.config.seed
            dataset = (PatchDataset(loaded, patch, self.config.batch_size, oversampling, seed=seed)
                       if self.privacy is None else SliceDataset(loaded, patch, oversampling, seed=seed))
            self._data = (key, dataset)
        return self._data[1]

    def _loader(self, data: PatchDataset | SliceDataset, epochs: int) -> DataLoader:
        """The batches of an epoch per pass; under DP Poisson-sampled slices, once the budget allows
        `epochs` more epochs."""
        pin_memory = self.device.type == "cuda"
        if self.privacy is None:
            return make_loader(data, num_workers=self.config.num_workers, pin_memory=pin_memory)
        self.privacy.check_budget(len(data), epochs)
        return self.privacy.loader(data, num_workers=self.config.num_workers, pin_memory=pin_memory)

    def _fit_modality_statistics(self, cases: Sequence[CaseEntry]) -> None:
        """Domain-specific normalization: fit statistics for modalities the model has not seen yet."""
        stored = self.config.plan.modality_statistics
        known = ModalityStatistics.from_dict(stored) if stored else None
        seen = set(known.by_modality) if known else set()
        new = [case for case in cases if normalize_modality(case.modality) not in seen | {"unknown"}]
        if known is not None and not new:
            return
        volumes = (replace(read_volume(case.image, case.series_uid), modality=case.modality) for case in new)
        fitted = ModalityStatistics.fit(volumes)
        merged = known.merge(fitted) if known is not None else fitted
        plan = replace(self.config.plan, modality_statistics=merged.to_dict())
        self.config = replace(self.config, plan=plan)

    # -- differential privacy ---------------------------------------------------------------------

    def epsilon_after(
        self, dataset: DatasetIndex | Sequence[CaseEntry], epochs: int, delta: float | None = None
    ) -> float:
        """The epsilon spent once `epochs` more epochs on these cases are trained, without training them:
        what a site compares with its budget before a round (at `delta`, the site's by default)."""
        return self._private().epsilon_after(self._training_size(dataset), epochs, delta)

    def check_budget(self, dataset: DatasetIndex | Sequence[CaseEntry], epochs: int) -> None:
        """PrivacyBudgetError when `epochs` more epochs on these cases would go beyond the budget: what
        train() checks before its first step, for a caller that must refuse earlier."""
        self._private().check_budget(self._training_size(dataset), epochs)

    def _private(self) -> PrivateTraining:
        if self.privacy is None:
            raise ConfigError("this model trains without differential privacy, so it spends no epsilon")
        return self.privacy

    def _training_size(self, dataset: DatasetIndex | Sequence[CaseEntry]) -> int:
        """The training slices of these cases' labelled ones: the records DP-SGD samples from."""
        cases = _labelled(dataset.training if isinstance(dataset, DatasetIndex) else dataset)
        return len(self._training_data(cases))

    # -- evaluation -------------------------------------------------------------------------------

    def evaluate(self, cases: Sequence[CaseEntry]) -> EvaluationResult:
        """Per-case and mean per-label Dice and HD95 (mm) of the labelled cases, on their own grids."""
        scores = []
        for case in _labelled(cases):
            image, label = read_labeled_pair(case.image, case.label, series_uid=case.series_uid)
            prediction = self.predict(replace(image, modality=case.modality))
            scores.append(score_case(case.case_id, prediction, label.array, self.labels, image.spacing))
        return summarize(scores)

    def predict(self, volume: Volume) -> np.ndarray:
        """The (z, y, x) uint8 label map of a study, on the study's own grid."""
        return segment(self.model, volume, self.config.plan, self.device, self.config.batch_size)

    # -- weights and checkpoints ------------------------------------------------------------------

    def get_weights(self) -> list[np.ndarray]:
        """Copies of every state_dict entry (parameters and buffers), in state_dict order."""
        return [value.detach().to("cpu", copy=True).numpy() for value in self.model.state_dict().values()]

    def set_weights(self, weights: Sequence[np.ndarray]) -> None:
        """Load arrays in get_weights() order; nothing changes unless every count and shape matches."""
        state = self.model.state_dict()
        if len(weights) != len(state):
            raise ConfigError(
                f"expected {len(state)} weight arrays but got {len(weights)}; "
                "is every party using the same network settings?"
            )
        for (name, tensor), array in zip(state.items(), weights, strict=True):
            if tuple(np.shape(array)) != tuple(tensor.shape):
                raise ConfigError(
                    f"weight {name!r} has shape {tuple(np.shape(array))}, expected {tuple(tensor.shape)}"
                )
        with torch.no_grad():
            for tensor, array in zip(state.values(), weights, strict=True):
                tensor.copy_(torch.as_tensor(np.asarray(array)))

    def optimizer_arrays(self) -> dict[str, np.ndarray]:
        """AdamW's per-parameter state as named arrays ("<parameter index>/<slot>"), so a federated site
        can keep its moments between rounds, which a fresh ClientApp process each round would lose."""
        return {
            f"{index}/{slot}": value.detach().to("cpu", copy=True).numpy()
            for index, state in self.optimizer.state_dict()["state"].items()
            for slot, value in state.items()
        }

    def load_optimizer_arrays(self, arrays: dict[str, np.ndarray]) -> bool:
        """Restore optimizer_arrays(); False, changing nothing, when they do not fit this model's
        parameters (another network, or none kept yet)."""
        parameters = list(self.model.parameters())
        state: dict[int, dict[str, torch.Tensor]] = {}
        for key, array in arrays.items():
            index, _, slot = key.partition("/")
            if not index.isdigit() or int(index) >= len(parameters):
                return False
            state.setdefault(int(index), {})[slot] = torch.as_tensor(np.asarray(array))
        moments_fit = all(
            tuple(slots[name].shape) == tuple(parameters[index].shape)
            for index, slots in state.items() for name in ("exp_avg", "exp_avg_sq") if name in slots
        )
        if not state or not moments_fit:
            return False
        stored = self.optimizer.state_dict()
        self.optimizer.load_state_dict({"state": state, "param_groups": stored["param_groups"]})
        return True

    def to_checkpoint(self, train_modality: str | None = None) -> Checkpoint:
        """Weights, optimizer state, history and every setting needed to use or resume the model."""
        modality = train_modality or ",".join(sorted(self.train_modalities)) or "unknown"
        return Checkpoint(
            network=self.config.network,
            plan=self.config.plan,
            state_dict={k: v.detach().to("cpu", copy=True) for k, v in self.model.state_dict().items()},
            augmentation=self.config.augmentation,
            train_modality=modality,
            epoch=self.epoch,
            optimizer_state=self.optimizer.state_dict(),
            history=[dict(record) for record in self.history],
            training=self.config.hyperparameters(),
        )

    @classmethod
    def from_checkpoint(
        cls, checkpoint: Checkpoint, device: torch.device | str | None = None, **changes: Any
    ) -> SegmentationAlgorithm:
        """Rebuild the algorithm where the checkpoint left it. `changes` override TrainingConfig
        fields such as learning_rate or cache_dir, never the model-defining ones."""
        forbidden = sorted(set(changes) & set(_MODEL_FIELDS))
        if forbidden:
            raise ConfigError(f"{', '.join(forbidden)} come from the checkpoint and cannot be changed")
        config = TrainingConfig(
            plan=checkpoint.plan, network=checkpoint.network, augmentation=checkpoint.augmentation,
        ).with_hyperparameters(checkpoint.training)
        algorithm = cls(replace(config, **changes), device)
        try:
            algorithm.model.load_state_dict(checkpoint.state_dict)
            if checkpoint.optimizer_state is not None:
                algorithm.optimizer.load_state_dict(checkpoint.optimizer_state)
        except (RuntimeError, ValueError, KeyError) as error:
            raise CheckpointError(f"the checkpoint's state does not fit its network ({first_line(error)})"
                                  ) from None
        for group in algorithm.optimizer.param_groups:  # the current settings win over the stored ones
            group["lr"] = algorithm.config.learning_rate
            group["weight_decay"] = algorithm.config.weight_decay
        algorithm.epoch = checkpoint.epoch
        algorithm.history = [dict(record) for record in checkpoint.history]
        if checkpoint.train_modality != "unknown":
            algorithm.train_modalities.update(checkpoint.train_modality.split(","))
        return algorithm


def _labelled(cases: Sequence[CaseEntry]) -> list[CaseEntry]:
    return [case for case in cases if case.label is not None]
