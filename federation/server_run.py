"""The server's side of a federated run: the plan, rounds, checkpoints, resume, metrics files and events.

Flower's Strategy.start runs rounds 1..N with one fixed train config. A FedSeg run must make its plan
from the sites' fingerprints before round 1, resume from its last checkpointed round and send each round
the latest per-site history, so this module drives the same strategy hooks (configure_train /
aggregate_train / configure_evaluate / aggregate_evaluate) in its own loop. A new run first asks the
sites for their fingerprints and writes the plan to plan.json (federation.planning); a resumed run keeps
the plan of its checkpoint and never plans again. The plan travels with the model config every round.
After every round it writes metrics.jsonl/metrics.csv, then model.pt (atomically, with the round number
and the plan), then events; the round's checkpoint event carries its summary (wall time, the slowest
site's work, the overhead, every site's part and array bytes: site_history.RoundSummary). A resumed run
continues after the round in model.pt and keeps only the history up to it. After the last round the
sites score the final global model once.

With homomorphic encryption ([he] enabled) the server holds only the public context: the global model
after a round is an encrypted sum that it sends on as it is, and checkpoints encrypted as model.he.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord
from flwr.serverapp import Grid

from federation.config import NETWORK_DIMS, ServerConfig
from federation.he.checkpoint import (
    ENCRYPTED_CHECKPOINT_NAME,
    EncryptedCheckpoint,
    load_encrypted_checkpoint,
    save_encrypted_checkpoint,
)
from federation.he.context import load_public_context
from federation.he.records import FINGERPRINT_KEY
from federation.he.secure_round import EncryptedAggregation
from federation.keys import fingerprint, load_public_key
from federation.planning import collect_fingerprints, federated_plan
from federation.round_costs import SUMMARY_FIELD, RoundSummary, SiteCost, site_costs
from federation.site_history import EVALUATE, TRAIN, SiteRound, write_metrics
from federation.strategy import ValidatingFedAvg, build_strategy
from federation.task import (
    LOCAL_EPOCHS_KEY,
    MODEL_KEY,
    PERSONALISE_EPOCHS_KEY,
    SHARED_HISTORY_KEY,
    model_to_json,
    shared_history_json,
)
from segmentation.algorithm import SegmentationAlgorithm
from segmentation.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from segmentation.errors import CheckpointError, ConfigError, FedSegError
from segmentation.events import EventWriter
from segmentation.plan import Plan, write_plan
from segmentation.settings import CHECKPOINT_NAME, GLOBAL_MODEL, PLAN_NAME, NetworkConfig, TrainingConfig

EVENTS_NAME = "events.jsonl"
METRICS_NAME = "metrics.jsonl"
SERVER_JOB = "server"
# The plan overrides server.toml may set; a resumed run's plan must agree with those that are set.
_PLAN_OVERRIDES = ("target_spacing", "patch_size")


def network_of(config: ServerConfig) -> NetworkConfig:
    """The network every site trains, from server.toml's [model]."""
    return NetworkConfig(spatial_dims=NETWORK_DIMS, out_channels=len(config.model.labels),
                         channels=config.model.channels)


def model_of(config: ServerConfig, plan: Plan) -> TrainingConfig:
    """The federation's model as the sites will build it: server.toml's [model] and [federation] with the
    run's plan."""
    model, federation = config.model, config.federation
    return TrainingConfig(
        plan=plan, network=network_of(config),
        augmentation=federation.augmentation, augmentation_probability=federation.augmentation_probability,
        learning_rate=model.learning_rate,
        batch_size=model.batch_size, proximal_mu=federation.proximal_mu,
    )


def encrypted_aggregation(config: ServerConfig, network: NetworkConfig) -> EncryptedAggregation | None:
    """The server's part of HE when server.toml turns it on: the public context (a secret one is refused),
    the model's number of values and, with node authentication, the registered keys every site's mask key
    must be signed with."""
    if not config.he.enabled:
        return None
    size = sum(tensor.numel() for tensor in network.build().state_dict().values())
    pinned = [fingerprint(load_public_key(path)) for path in config.site_public_keys] or None
    return EncryptedAggregation(load_public_context(config.he.context), size, pinned)


@dataclass
class RunState:
    """Where a run stands: the global weights after `completed_round` rounds and every site record."""

    arrays: dict[str, np.ndarray]
    completed_round: int = 0
    records: list[SiteRound] = field(default_factory=list)


def read_metrics(path: Path) -> list[SiteRound]:
    """The records of a metrics.jsonl written by site_history.write_metrics; [] when there is none."""
    if not path.is_file():
        return []
    lines = path.read_text(encoding="utf-8").splitlines()
    try:
        return [SiteRound(**json.loads(line)) for line in lines if line]
    except (json.JSONDecodeError, TypeError) as error:
        reason = type(error).__name__
        raise CheckpointError(f"{path}: not a metrics file this version wrote ({reason})") from None


StoredModel = Checkpoint | EncryptedCheckpoint


def stored_checkpoint(
    run_dir: Path, resume: bool, he: EncryptedAggregation | None = None
) -> StoredModel | None:
    """With resume, the run folder's last checkpointed round (model.pt, or with HE the encrypted model.he,
    which must be under the same key); None for a new run, whose folder must hold no checkpoint."""
    path, other = run_dir / CHECKPOINT_NAME, run_dir / ENCRYPTED_CHECKPOINT_NAME
    if he is not None:
        path, other = other, path
    if other.exists():
        raise ConfigError(f"{run_dir} holds a run {'without' if he else 'with'} homomorphic encryption "
                          f"({other.name}); keep [he] enabled as it was or choose another [server] run_dir")
    if not path.exists():
        return None
    if not resume:
        raise ConfigError(f"{run_dir} already holds a run ({path.name}); resume it with --resume or choose "
                          "another [server] run_dir")
    checkpoint = load_checkpoint(path) if he is None else load_encrypted_checkpoint(path)
    if he is not None and checkpoint.fingerprint != he.fingerprint:
        raise ConfigError(f"{path} is encrypted under HE key {checkpoint.fingerprint}, but [he] "
                          f"public_context has key {he.fingerprint}; give the server the run's public.ctx")
    return checkpoint


def check_resumable(checkpoint: StoredModel, config: ServerConfig) -> None:
    """A resumed run keeps its model and its plan: server.toml's network, labels, augmentation and plan
    overrides must be what the checkpoint was made with."""
    where = config.run_dir
    stored = (checkpoint.network, checkpoint.labels, checkpoint.augmentation)
    if stored != (network_of(config), config.model.label_map, config.federation.augmentation):
        raise ConfigError(f"{where} was trained with other [model] settings or augmentation than server.toml "
                          "now has; restore them or choose another [server] run_dir")
    for name in _PLAN_OVERRIDES:
        wanted, kept = getattr(config.model, name), tuple(getattr(checkpoint.plan, name))
        if wanted is not None and tuple(wanted) != kept:
            raise ConfigError(f"{where} follows a plan with {name} {list(kept)}, but server.toml's [model] "
                              f"{name} is {list(wanted)}; a resumed run keeps its plan: restore it or choose "
                              "another [server] run_dir")


def resumed_state(checkpoint: StoredModel, run_dir: Path) -> RunState:
    """The checkpoint's weights (plaintext or encrypted) and the site records up to its round."""
    records = [record for record in read_metrics(run_dir / METRICS_NAME) if record.round <= checkpoint.round]
    if isinstance(checkpoint, EncryptedCheckpoint):
        arrays = checkpoint.arrays
    else:
        arrays = {name: tensor.numpy() for name, tensor in checkpoint.state_dict.items()}
    return RunState(arrays, checkpoint.round, records)


def initial_weights(training: TrainingConfig) -> dict[str, np.ndarray]:
    """A new run's seeded initial weights, by state_dict name."""
    algorithm = SegmentationAlgorithm(training, device="cpu")
    return dict(zip(algorithm.model.state_dict(), algorithm.get_weights(), strict=True))


def save_global_model(
    path: Path, training: TrainingConfig, arrays: dict[str, np.ndarray], server_round: int, local_epochs: int,
    kind: str = GLOBAL_MODEL, train_modality: str = "unknown",
) -> None:
    """model.pt in the checkpoint format `fedseg predict`/`evaluate` read, with the plan and the round it
    closes; a site saves its personalised model (kind, its own modality) the same way."""
    save_checkpoint(Checkpoint(
        network=training.network, plan=training.plan,
        state_dict={name: torch.from_numpy(np.array(array)) for name, array in arrays.items()},
        augmentation=training.augmentation, epoch=server_round * local_epochs,
        training=training.hyperparameters(), round=server_round, kind=kind, train_modality=train_modality,
    ), path)


class FederatedRun:
    """One server run: the strategy, the run folder and the event stream, driven round by round."""

    training: TrainingConfig  # set when the run starts: its plan comes from the sites or the checkpoint

    def __init__(self, config: ServerConfig, grid: Grid, events: EventWriter) -> None:
        self.config = config
        self.grid = grid
        self.events = events
        self.run_dir = config.run_dir
        self.he = encrypted_aggregation(config, network_of(config))
        self.strategy: ValidatingFedAvg = build_strategy(config.federation, config.validation, self.he)
        self.strategy.send = self._send_within_round
        self._within_round: list[Message] = []  # a training round's later replies (HE uploads, corrections)

    def run(self, resume: bool) -> RunState:
        """Plan (a new run) or take the checkpoint's plan (a resumed one), train the remaining rounds, then
        have the sites score the final model (unless done before)."""
        federation = self.config.federation
        checkpoint = stored_checkpoint(self.run_dir, resume, self.he)
        if checkpoint is not None:
            check_resumable(checkpoint, self.config)
        state = resumed_state(checkpoint, self.run_dir) if checkpoint is not None else RunState({})
        if state.completed_round > federation.rounds:
            raise ConfigError(f"{self.run_dir} is at round {state.completed_round}, beyond [federation] "
                              f"rounds = {federation.rounds}; raise rounds to continue it")
        self.strategy.history.records.extend(state.records)
        self.events.emit("started", rounds=federation.rounds, round=state.completed_round)
        self.strategy.summary()
        self.training = model_of(self.config, self._plan(checkpoint))
        if checkpoint is None:
            state.arrays = initial_weights(self.training)
        round_started = time.monotonic()  # a round's wall time runs from the end of the one before
        for server_round in range(state.completed_round + 1, federation.rounds + 1):
            state.arrays, metrics, sites = self._train_round(server_round, state.arrays)
            state.completed_round = server_round
            self._record(server_round, TRAIN)
            self._checkpoint(server_round, state.arrays)
            round_ended = time.monotonic()
            summary = RoundSummary(server_round, round_ended - round_started, sites)
            round_started = round_ended
            self.events.emit("evaluation", round=server_round, phase=TRAIN, metrics=metrics)
            self.events.emit("checkpoint", round=server_round, epoch=server_round * federation.local_epochs,
                             **{SUMMARY_FIELD: summary.to_dict()})
        final: dict[str, Any] = {}
        if not any(record.phase == EVALUATE and record.round == federation.rounds
                   for record in self.strategy.history.records):
            final = self._final_evaluation(federation.rounds, state.arrays)
            self._record(federation.rounds, EVALUATE)
            self.events.emit("evaluation", round=federation.rounds, phase=EVALUATE, metrics=final)
        state.records = list(self.strategy.history.records)
        self.events.emit("finished", metrics=final)
        return state

    def _plan(self, checkpoint: StoredModel | None) -> Plan:
        """The run's plan, announced in a plan event: a resumed run's is its checkpoint's (never made
        again); a new run's is made from the sites' fingerprints and written to plan.json with the merged
        fingerprint, and its event names every site's verdict."""
        if checkpoint is not None:
            self.events.emit("plan", source="checkpoint", description=checkpoint.plan.describe(),
                             plan=checkpoint.plan.to_dict())
            return checkpoint.plan
        answers = collect_fingerprints(self.grid, self.config, self._send, self.strategy.history)
        plan, fingerprint = federated_plan(answers, self.config)
        write_plan(plan, self.run_dir / PLAN_NAME, fingerprint=fingerprint)
        self.events.emit("plan", source="fingerprints", description=plan.describe(), plan=plan.to_dict(),
                         sites=[answer.to_dict() for answer in answers])
        return plan

    def _checkpoint(self, server_round: int, arrays: dict[str, np.ndarray]) -> None:
        """model.pt, or with HE model.he: the global model as the server holds it, encrypted."""
        if self.he is None:
            save_global_model(self.run_dir / CHECKPOINT_NAME, self.training, arrays, server_round,
                              self.config.federation.local_epochs)
            return
        save_encrypted_checkpoint(EncryptedCheckpoint(
            network=self.training.network, plan=self.training.plan, augmentation=self.training.augmentation,
            round=server_round, fingerprint=self.he.fingerprint, arrays=arrays,
        ), self.run_dir / ENCRYPTED_CHECKPOINT_NAME)

    def _round_config(self) -> ConfigRecord:
        """What every site gets with the weights (Flower's strategy adds the round number)."""
        config: dict[str, Any] = {
            MODEL_KEY: model_to_json(self.training),
            LOCAL_EPOCHS_KEY: self.config.federation.local_epochs,
        }
        if self.he is not None:
            config[FINGERPRINT_KEY] = self.he.fingerprint
        if self.config.federation.share_site_metrics:
            records = self.strategy.history.records
            config[SHARED_HISTORY_KEY] = shared_history_json(record.to_dict() for record in records)
        return ConfigRecord(config)

    def _train_round(
        self, server_round: int, arrays: dict[str, np.ndarray]
    ) -> tuple[dict[str, np.ndarray], dict[str, Any], tuple[SiteCost, ...]]:
        """The round's global arrays, its averaged metrics and every sampled site's part in it."""
        record = ArrayRecord({name: Array(array) for name, array in arrays.items()})
        config = self._round_config()
        messages = list(self.strategy.configure_train(server_round, record, config, self.grid))
        replies = self._send(messages)
        self._within_round = []
        aggregated, metrics = self.strategy.aggregate_train(server_round, replies)
        if aggregated is not None:
            arrays = {name: array.numpy() for name, array in aggregated.items()}
        costs = site_costs(server_round, messages, replies, self.strategy.history, self._within_round)
        return arrays, _plain(metrics), costs

    def _final_evaluation(self, server_round: int, arrays: dict[str, np.ndarray]) -> dict[str, Any]:
        record = ArrayRecord({name: Array(array) for name, array in arrays.items()})
        config = self._round_config()
        # After scoring the final model, every site fine-tunes it on its own data and keeps it too.
        config[PERSONALISE_EPOCHS_KEY] = self.config.federation.personalise_epochs
        messages = self.strategy.configure_evaluate(server_round, record, config, self.grid)
        return _plain(self.strategy.aggregate_evaluate(server_round, self._send(messages)))

    def _send_within_round(self, messages: list[Message]) -> list[Message]:
        """The strategy's exchanges after the training replies, whose replies count in the round's costs."""
        replies = self._send(messages)
        self._within_round.extend(replies)
        return replies

    def _send(self, messages: Iterable[Message]) -> list[Message]:
        messages = list(messages)
        if not messages:
            return []
        replies = list(self.grid.send_and_receive(messages, timeout=self.config.federation.round_timeout))
        self.strategy.history.sent(messages)  # after sending: the grid gave each message its id
        return replies

    def _record(self, server_round: int, phase: str) -> None:
        """Write metrics.jsonl/.csv (before the round's checkpoint: a resumed run drops records of rounds
        after its checkpoint) and emit the round's site-metrics events."""
        records = self.strategy.history.records
        write_metrics(records, self.run_dir)
        for record in records:
            if record.round == server_round and record.phase == phase:
                self.events.emit("site-metrics", **_site_event(record))


def _site_event(record: SiteRound) -> dict[str, Any]:
    data = record.to_dict()
    return {key: data[key] for key in ("round", "site", "phase", "status", "num_examples", "metrics")}


def _plain(metrics: MetricRecord | None) -> dict[str, Any]:
    return dict(metrics) if metrics is not None else {}


def run_server(grid: Grid, config: ServerConfig, resume: bool) -> RunState:
    """The ServerApp's work, with every failure written to the run's event stream before it propagates."""
    with EventWriter(config.run_dir / EVENTS_NAME, job=SERVER_JOB) as events:
        try:
            return FederatedRun(config, grid, events).run(resume)
        except Exception as error:
            message = str(error) if isinstance(error, FedSegError) else f"{type(error).__name__}: {error}"
            events.emit("error", code=type(error).__name__, message=message)
            raise
