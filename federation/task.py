"""A site's part of a federated round, in the segmentation engine's terms and without Flower.

The Flower apps stay thin (as Flower's own examples keep task.py apart from client_app.py and
server_app.py): they move arrays and numbers in and out; everything a site does with them is here.
The federation's model travels as JSON (network, plan with the labels, hyperparameters: what a
checkpoint stores), the weights as a name -> array map in state_dict order, and what a site reports as
flat numeric metrics: "num-examples", "train-loss", "before/dice/<label>", "after/dice/<label>"...
Before round 1 a site answers the server's fingerprint query with its training data's fingerprint
(numbers only), from which the server makes the federation's plan (federation.planning).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from federation.he.masking_settings import MaskingSettings
from federation.site_errors import SiteErrorCode
from segmentation.errors import CheckpointError, ConfigError, FedSegError, PrivacyBudgetError
from segmentation.events import EventWriter
from segmentation.fingerprint import fingerprint_cases
from segmentation.plan import Fingerprint, Plan
from segmentation.settings import NetworkConfig, PrivacySettings, TrainingConfig

if TYPE_CHECKING:
    from segmentation.algorithm import SegmentationAlgorithm
    from segmentation.datalist import CaseEntry, DatasetIndex

NUM_EXAMPLES = "num-examples"
TRAIN_LOSS = "train-loss"
BEFORE = "before"  # the received global model, scored on the site's validation cases
AFTER = "after"  # the same model after this round's local training
SITE_JOB = "federation"

# Keys of a round's ConfigRecord; Flower's strategies add "server-round" and FedProx "proximal-mu".
CONFIG_KEY = "config"  # the strategy's name for the ConfigRecord of its messages
MODEL_KEY = "model"  # model_to_json(): what to build
LOCAL_EPOCHS_KEY = "local-epochs"
PERSONALISE_EPOCHS_KEY = "personalise-epochs"  # the final evaluation: epochs of each site's fine-tuning
SHARED_HISTORY_KEY = "site-history"  # shared_history_json(): every site's numbers so far

# A query message's ConfigRecord (CONFIG_KEY) names what the server asks under QUERY_KEY. The one query
# is FINGERPRINT_QUERY; its reply holds the JSON fingerprint under DATA_FINGERPRINT_KEY, in a ConfigRecord
# of that name.
QUERY_KEY = "query"
FINGERPRINT_QUERY = "fingerprint"
DATA_FINGERPRINT_KEY = "fingerprint"

# Keys of the SuperNode's --node-config that describe the site.
NODE_SITE_NAME = "site-name"
NODE_MODALITY = "modality"
NODE_DATA_DIR = "data-dir"
NODE_EVENT_FILE = "event-file"
NODE_HE_SECRET_CONTEXT = "he-secret-context"  # only when the site encrypts (site.toml [he] enabled)
NODE_PRIVACY = "privacy"  # only with DP-SGD (site.toml [privacy] dp): PrivacySettings as JSON
NODE_MASKING = "masking"  # only with HE: MaskingSettings as JSON
PRIVACY_ACCOUNT_NAME = "privacy-account.json"  # a DP site's spent privacy, kept beside its event file


class SiteRoundError(FedSegError):
    """A failure of a site's round that maps to a specific SiteErrorCode.

    shareable: the message holds nothing private (no paths, no data), so the site may send it to the
    server with the code (e.g. the two key fingerprints of an HE key mismatch).
    """

    def __init__(self, code: SiteErrorCode, message: str, shareable: bool = False) -> None:
        super().__init__(message)
        self.code = code
        self.shareable = shareable


def error_code(error: BaseException) -> SiteErrorCode:
    """The code a site reports for an exception: typed errors keep their meaning, the rest is FAILED."""
    if isinstance(error, SiteRoundError):
        return error.code
    if isinstance(error, PrivacyBudgetError):
        return SiteErrorCode.PRIVACY_BUDGET
    if isinstance(error, (ConfigError, CheckpointError)):
        return SiteErrorCode.MODEL
    if isinstance(error, FedSegError):
        return SiteErrorCode.DATA
    return SiteErrorCode.FAILED


@dataclass(frozen=True)
class SiteSettings:
    """What a site's ClientApp needs to know about its site; it arrives as the SuperNode's node config."""

    name: str
    modality: str
    data_dir: Path
    event_file: Path
    he_secret_context: Path | None = None
    privacy: PrivacySettings = PrivacySettings()
    masking: MaskingSettings = MaskingSettings()

    def to_node_config(self) -> dict[str, str]:
        config = {
            NODE_SITE_NAME: self.name, NODE_MODALITY: self.modality,
            NODE_DATA_DIR: str(self.data_dir), NODE_EVENT_FILE: str(self.event_file),
        }
        if self.he_secret_context is not None:
            config[NODE_HE_SECRET_CONTEXT] = str(self.he_secret_context)
            config[NODE_MASKING] = self.masking.to_json()
        if self.privacy.dp:
            config[NODE_PRIVACY] = json.dumps(asdict(self.privacy))
        return config

    @classmethod
    def from_node_config(cls, node_config: Mapping[str, Any]) -> SiteSettings:
        missing = [key for key in (NODE_SITE_NAME, NODE_MODALITY, NODE_DATA_DIR, NODE_EVENT_FILE)
                   if not isinstance(node_config.get(key), str) or not node_config[key]]
        if missing:
            raise SiteRoundError(SiteErrorCode.SETTINGS, f"the node config lacks {', '.join(missing)}")
        he_secret_context = node_config.get(NODE_HE_SECRET_CONTEXT)
        return cls(
            name=node_config[NODE_SITE_NAME], modality=node_config[NODE_MODALITY],
            data_dir=Path(node_config[NODE_DATA_DIR]), event_file=Path(node_config[NODE_EVENT_FILE]),
            he_secret_context=Path(he_secret_context) if isinstance(he_secret_context, str) else None,
            privacy=_node_privacy(node_config.get(NODE_PRIVACY)),
            masking=_node_masking(node_config.get(NODE_MASKING)),
        )

    @property
    def privacy_account(self) -> Path:
        """Where a site with DP-SGD keeps its privacy account across restarts: beside its event file."""
        return self.event_file.parent / PRIVACY_ACCOUNT_NAME


def _node_masking(text: object) -> MaskingSettings:
    """The node config's MaskingSettings JSON; none: the defaults (no node key, no pinning)."""
    if text is None:
        return MaskingSettings()
    try:
        return MaskingSettings.from_json(str(text))
    except (ValueError, TypeError, KeyError, ConfigError):
        raise SiteRoundError(SiteErrorCode.SETTINGS, "the node config's masking settings are unusable"
                             ) from None


def _node_privacy(text: object) -> PrivacySettings:
    """The node config's PrivacySettings JSON; none: no DP."""
    if text is None:
        return PrivacySettings()
    try:
        return PrivacySettings(**json.loads(str(text)))
    except (ValueError, TypeError, ConfigError) as error:
        raise SiteRoundError(SiteErrorCode.SETTINGS, f"the node config's privacy settings are unusable: "
                                                     f"{error}") from None


class RoundEvents(EventWriter):
    """The site's event file with the federated round on every event (the federation's extra field)."""

    def __init__(self, target: str | Path, server_round: int) -> None:
        super().__init__(target, job=SITE_JOB)
        self.round = server_round

    def emit(self, kind: str, **fields: Any) -> dict[str, Any]:
        return super().emit(kind, **{"round": self.round, **fields})


# -- the federation's model on the wire ------------------------------------------------------------

def model_to_json(config: TrainingConfig) -> str:
    """Everything a site needs to build the federation's model and follow its plan (no paths: cache_dir
    stays local)."""
    return json.dumps({
        "network": config.network.to_dict(),
        "plan": config.plan.to_dict(),
        "augmentation": config.augmentation,
        "training": config.hyperparameters(),
    })


def model_from_json(text: str) -> TrainingConfig:
    """The TrainingConfig of model_to_json's text (its labels are its plan's); ConfigError when it is not
    one, or when its plan does not fit its network."""
    try:
        data = json.loads(text)
        return TrainingConfig(
            plan=Plan.from_dict(data["plan"]),
            network=NetworkConfig.from_dict(data["network"]),
            augmentation=data["augmentation"],
        ).with_hyperparameters(data["training"])
    except ConfigError as error:
        raise ConfigError(f"the federation's model description is unusable: {error}") from None
    except (json.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError) as error:
        reason = type(error).__name__
        raise ConfigError(f"the federation's model description is unusable ({reason})") from None


def site_fingerprint(dataset: DatasetIndex) -> Fingerprint:
    """The fingerprint of the site's labelled training cases (what it trains on; its test split stays
    out): numbers only, no path, name or identifier, so it may leave the site. A DatasetError without
    labelled training cases."""
    return fingerprint_cases(dataset.training, dataset.labels)


# -- weights by name -------------------------------------------------------------------------------

def named_weights(algorithm: SegmentationAlgorithm) -> dict[str, np.ndarray]:
    """The model's state as name -> array, in state_dict order (the keys the server validates)."""
    return dict(zip(algorithm.model.state_dict(), algorithm.get_weights(), strict=True))


def load_named_weights(algorithm: SegmentationAlgorithm, arrays: Mapping[str, np.ndarray]) -> None:
    """Load name -> array weights; ConfigError unless the names are exactly the model's."""
    names = list(algorithm.model.state_dict())
    if set(arrays) != set(names):
        first = sorted(set(arrays) ^ set(names))[0]
        raise ConfigError(f"the global model's arrays do not match this network (first difference {first!r})")
    algorithm.set_weights([arrays[name] for name in names])


# -- a site's round --------------------------------------------------------------------------------

def prefixed(prefix: str, metrics: Mapping[str, float]) -> dict[str, float]:
    return {f"{prefix}/{key}": value for key, value in metrics.items()}


def validation_cases(dataset: DatasetIndex) -> tuple[CaseEntry, ...]:
    """The labelled cases of the site's test split: what the site scores models on."""
    return tuple(case for case in dataset.test if case.label is not None)


def check_labels(dataset: DatasetIndex, labels: Mapping[int, str]) -> None:
    """The site's dataset must segment exactly the federation's labels."""
    if dict(dataset.labels) != dict(labels):
        raise SiteRoundError(SiteErrorCode.MODEL, f"the dataset's labels {dict(dataset.labels)} differ "
                                                  f"from the federation's {dict(labels)}")


@dataclass(frozen=True)
class RoundResult:
    """What a site sends back after training: its new weights and flat numeric metrics."""

    weights: dict[str, np.ndarray]
    metrics: dict[str, float]


def train_round(
    algorithm: SegmentationAlgorithm, dataset: DatasetIndex, epochs: int, events: EventWriter | None = None
) -> RoundResult:
    """Score the received model, train it `epochs` epochs on the site's data, score it again.

    The scores use the site's validation cases (none: only num-examples and train-loss are reported).
    """
    if not any(case.label is not None for case in dataset.training):
        raise SiteRoundError(SiteErrorCode.DATA, "the dataset has no labelled training cases")
    validation = validation_cases(dataset)
    metrics: dict[str, float] = {}
    if validation:
        before = algorithm.evaluate(validation).metrics
        metrics.update(prefixed(BEFORE, before))
        if events is not None:
            events.emit("evaluation", model="global", metrics=before)
    result = algorithm.train(dataset, epochs, events=events)
    metrics.update({NUM_EXAMPLES: result.num_examples, TRAIN_LOSS: result.loss})
    if validation:
        after = algorithm.evaluate(validation).metrics
        metrics.update(prefixed(AFTER, after))
        if events is not None:
            events.emit("evaluation", model="local", metrics=after)
    return RoundResult(named_weights(algorithm), metrics)


def evaluate_round(algorithm: SegmentationAlgorithm, cases: Sequence[CaseEntry]) -> dict[str, float]:
    """The model's Dice and HD95 on the site's validation cases, weighted by their number."""
    if not cases:
        raise SiteRoundError(SiteErrorCode.NO_VALIDATION, "the dataset has no labelled validation cases")
    return {NUM_EXAMPLES: len(cases), **algorithm.evaluate(cases).metrics}


# -- every site's numbers, shared back by the server -----------------------------------------------

_SHARED_FIELDS = ("round", "phase", "site", "status", "num_examples", "metrics")


def shared_history_json(records: Iterable[Mapping[str, Any]]) -> str:
    """The per-site records (SiteRound.to_dict()) as sites receive them: numbers and names, no more."""
    return json.dumps([{key: record[key] for key in _SHARED_FIELDS} for record in records], allow_nan=False)


def emit_shared_history(events: EventWriter, text: str, after_round: int) -> int:
    """Write the server's shared per-site records of rounds after `after_round` as site-metrics events.

    Returns the last round written, so the next round's message (which repeats the whole history)
    only adds what is new. Records that are not plain numbers are skipped, never trusted.
    """
    try:
        records = json.loads(text)
    except json.JSONDecodeError:
        return after_round
    latest = after_round
    for record in records if isinstance(records, list) else []:
        if not _is_shared_record(record) or record["round"] <= after_round:
            continue
        events.emit("site-metrics", **{key: record[key] for key in _SHARED_FIELDS})
        latest = max(latest, record["round"])
    return latest


def _is_number(value: Any) -> bool:
    return value is None or (isinstance(value, (int, float)) and not isinstance(value, bool))


def _is_shared_record(record: Any) -> bool:
    if not isinstance(record, dict) or not all(key in record for key in _SHARED_FIELDS):
        return False
    metrics = record["metrics"]
    names = (record["phase"], record["site"], record["status"])
    return (
        isinstance(record["round"], int) and all(isinstance(name, str) for name in names)
        and _is_number(record["num_examples"]) and isinstance(metrics, dict)
        and all(_is_number(v) or (isinstance(v, list) and all(map(_is_number, v))) for v in metrics.values())
    )
