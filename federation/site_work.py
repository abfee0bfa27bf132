"""What a site does with the server's messages: train or evaluate the federation's model on its own data,
or answer a query (before round 1: its training data's fingerprint, from which the server plans).

Flower-free apart from its record types, so that it runs either in the ClientApp's process or in the
site worker (federation.site_worker), which keeps PyTorch and MONAI loaded between rounds. Only arrays
and numbers leave the site, plus its display name: a failure is answered with a SiteErrorCode and never
with its exception text, which goes to the site's event file and log instead.

Every site keeps the latest global model it received as global-model.pt next to its event file (a
checkpoint `fedseg predict` and the workbench's Inference page read), labelled with the round that made
it: a training message for round r carries round r-1's model, an evaluation message for round r carries
round r's. A round that failed or was stopped thus never names a model; a site that joins a run late
keeps it from its first message on, and a "global-model" event says which round it holds.

With homomorphic encryption (site.toml [he]) the site decrypts the global model, checks its own update
and, once the server sends the round's roster, sends it weighted, masked and encrypted
(federation.he.site); its global-model.pt is then the only plaintext copy of the federation's model,
since the server holds it encrypted.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, MessageType, MetricRecord, RecordDict

from federation.he.context import HeContext
from federation.he.records import FINGERPRINT_KEY, is_encrypted
from federation.he.roster import DROPPED_KEY, UNMASK_QUERY, UPLOAD_QUERY
from federation.he.site import decrypt_global, site_context, train_reply, unmask, upload
from federation.server_run import save_global_model
from federation.site_history import EVALUATE, SITE_NAME_KEY, SITE_RECORD_KEY, SITE_SECONDS_KEY, TRAIN
from federation.site_protocol import SiteAnswer
from federation.task import (
    CONFIG_KEY,
    DATA_FINGERPRINT_KEY,
    FINGERPRINT_QUERY,
    LOCAL_EPOCHS_KEY,
    MODEL_KEY,
    NUM_EXAMPLES,
    PERSONALISE_EPOCHS_KEY,
    QUERY_KEY,
    SHARED_HISTORY_KEY,
    TRAIN_LOSS,
    RoundEvents,
    SiteErrorCode,
    SiteRoundError,
    SiteSettings,
    check_labels,
    emit_shared_history,
    error_code,
    evaluate_round,
    load_named_weights,
    model_from_json,
    named_weights,
    prefixed,
    site_fingerprint,
    train_round,
    validation_cases,
)
from segmentation.algorithm import SegmentationAlgorithm
from segmentation.atomic import write_text_atomic
from segmentation.datalist import DatasetIndex, load_dataset
from segmentation.errors import ConfigError, FedSegError, first_line
from segmentation.settings import (
    EPSILON_METRIC,
    GLOBAL_MODEL_NAME,
    PERSONALISED_MODEL,
    PERSONALISED_MODEL_NAME,
    PrivacySettings,
)

logger = logging.getLogger(__name__)

# The site's own memory across a run's messages (Context.state survives between ClientApp processes).
_STATE_KEY = "fedseg-site"
_SHARED_THROUGH = "shared-through-round"
_OPTIMIZER_KEY = "fedseg-optimizer"  # the site's AdamW moments, kept from one round to the next
_PLAN_ANNOUNCED = "plan-announced"
_KEPT_ROUND = "global-model-round"  # the round of the global model kept in GLOBAL_MODEL_NAME
_PRIVACY_KEY = "fedseg-privacy"  # a DP site's privacy account (segmentation.privacy's history, JSON)


Handler = Callable[[RecordDict, RecordDict, SiteSettings, RoundEvents], RecordDict]


def answer(kind: str, content: RecordDict, node_config: Mapping[str, Any], state: RecordDict) -> SiteAnswer:
    """Run the train, evaluate or query handler on a message's content with the site's node config and
    state."""
    handler = _HANDLERS[kind]
    try:
        settings = SiteSettings.from_node_config(dict(node_config))
        events = RoundEvents(settings.event_file, _server_round(content))
    except Exception as error:  # noqa: BLE001 - whatever went wrong stays at the site
        logger.exception("the site's settings are unusable")
        return SiteAnswer(state, error=_error(error))
    with events:
        try:
            reply = handler(content, state, settings, events)
        except Exception as error:  # noqa: BLE001 - whatever went wrong stays at the site
            code = error_code(error)
            events.emit("error", code=int(code), message=_describe(error))
            logger.exception("round %s failed at this site (code %d)", events.round, code)
            return SiteAnswer(state, error=_error(error))
    site = reply.config_records.get(SITE_RECORD_KEY, ConfigRecord())
    site[SITE_NAME_KEY] = settings.name
    reply[SITE_RECORD_KEY] = site
    return SiteAnswer(state, content=reply)


def _train(content: RecordDict, state: RecordDict, settings: SiteSettings, events: RoundEvents) -> RecordDict:
    config = _config(content)
    _share_history(config, state, events)
    epochs = int(config.get(LOCAL_EPOCHS_KEY, 1))
    private = settings.privacy if settings.privacy.dp else None  # DP-SGD: training only, never scoring
    algorithm, dataset, he = _received_model(content, config, settings, private)
    _announce_plan(algorithm, state, events)
    global_model = named_weights(algorithm)
    # Count epochs across rounds: each round then draws new batches and augmentations.
    algorithm.epoch = (events.round - 1) * epochs
    _restore_optimizer(algorithm, state)
    if algorithm.privacy is not None:
        _open_privacy_account(algorithm, dataset, epochs, state, settings)
    events.emit("started", epochs=epochs)
    _keep_global_model(global_model, algorithm, epochs, events.round - 1, state, settings, events)
    started = time.monotonic()
    try:
        result = train_round(algorithm, dataset, epochs, events)
    finally:  # steps taken are spent, even in a round that failed
        if algorithm.privacy is not None:
            _keep_privacy_account(algorithm, state, settings)
    # The site's own work, so the server can tell it from the round's overhead.
    seconds = time.monotonic() - started
    state[_OPTIMIZER_KEY] = ArrayRecord(
        {name: Array(array) for name, array in algorithm.optimizer_arrays().items()}
    )
    metrics = {**result.metrics, SITE_SECONDS_KEY: seconds}
    if algorithm.privacy is not None:
        # The training loss is measured on training slices without noise: outside the guarantee.
        metrics.pop(TRAIN_LOSS, None)
        metrics[EPSILON_METRIC] = algorithm.privacy.epsilon_spent()
    reply = RecordDict({"metrics": MetricRecord(_numbers(metrics))})
    if he is None:
        reply["arrays"] = ArrayRecord({name: Array(array) for name, array in result.weights.items()})
    else:  # masked and encrypted now, or kept for the upload query (federation.he.site)
        reply.update(train_reply(he, result.weights, global_model, int(result.metrics[NUM_EXAMPLES]),
                                 config, events.round, settings.masking, state))
        reply[SITE_RECORD_KEY] = ConfigRecord({FINGERPRINT_KEY: he.fingerprint})
    events.emit("finished", metrics=result.metrics)
    return reply


def _evaluate(
    content: RecordDict, state: RecordDict, settings: SiteSettings, events: RoundEvents
) -> RecordDict:
    config = _config(content)
    _share_history(config, state, events)
    algorithm, dataset, _ = _received_model(content, config, settings)
    _announce_plan(algorithm, state, events)
    local_epochs = int(config.get(LOCAL_EPOCHS_KEY, 1))
    _keep_global_model(named_weights(algorithm), algorithm, local_epochs, events.round, state, settings,
                       events)
    metrics = evaluate_round(algorithm, validation_cases(dataset))
    events.emit("evaluation", model="global", phase="evaluate", metrics=metrics)
    epochs = int(config.get(PERSONALISE_EPOCHS_KEY, 0))
    if epochs > 0:
        metrics.update(_personalise(algorithm, dataset, epochs, local_epochs, state, settings, events))
    return RecordDict({"metrics": MetricRecord(_numbers(metrics))})


def _personalise(
    global_model: SegmentationAlgorithm, dataset: DatasetIndex, epochs: int, local_epochs: int,
    state: RecordDict, settings: SiteSettings, events: RoundEvents,
) -> dict[str, float]:
    """Fine-tune the final global model on the site's own data for `epochs` epochs and keep it as the
    site's personalised model, beside the global one (which stays the model for other modalities and
    sites); its scores on the site's validation cases, under personalised/, for the server's table.

    Without the cross-modality augmentation: this model is for the site's own scanner (on the demo's
    sites, 5 epochs with GIN ended 0.010 to 0.012 below their local-only models, without it 0.004 to
    0.017 above; docs/federation.md)."""
    algorithm = SegmentationAlgorithm(replace(global_model.config, augmentation="none"))
    load_named_weights(algorithm, named_weights(global_model))
    algorithm.epoch = events.round * local_epochs  # new batches after the last round's
    _restore_optimizer(algorithm, state)
    events.emit("started", epochs=epochs, model=PERSONALISED_MODEL)
    algorithm.train(dataset, epochs, events=events)  # rounds trained on these cases: they are labelled
    save_global_model(settings.event_file.parent / PERSONALISED_MODEL_NAME, algorithm.config,
                      named_weights(algorithm), events.round, local_epochs, kind=PERSONALISED_MODEL,
                      train_modality=settings.modality)
    scores = algorithm.evaluate(validation_cases(dataset)).metrics
    events.emit("personalised-model", round=events.round, epochs=epochs, metrics=scores)
    return prefixed(PERSONALISED_MODEL, scores)


def _query(content: RecordDict, state: RecordDict, settings: SiteSettings, events: RoundEvents) -> RecordDict:
    """The site's training data fingerprint (numbers only), the one thing a server may ask outside a round;
    in an encrypted round, its masked upload or its mask corrections (federation.he.site)."""
    config = _config(content)
    asked = config.get(QUERY_KEY)
    if asked in (UPLOAD_QUERY, UNMASK_QUERY):
        fingerprint = config.get(FINGERPRINT_KEY)
        he = site_context(settings.he_secret_context, fingerprint if isinstance(fingerprint, str) else None)
        if he is None:
            raise SiteRoundError(SiteErrorCode.HE_KEY, "the server asks for an encrypted upload, naming "
                                                       "no key")
        if asked == UPLOAD_QUERY:
            reply = upload(he, config, events.round, settings.masking, state)
            reply[SITE_RECORD_KEY] = ConfigRecord({FINGERPRINT_KEY: he.fingerprint})
            return reply
        reply = unmask(he, config, events.round, settings.masking, state)
        reply[SITE_RECORD_KEY] = ConfigRecord({FINGERPRINT_KEY: he.fingerprint})
        # Every correction is on record: a server that claims drops it holds uploads of shows up here.
        events.emit("mask-correction", peers=len(config[DROPPED_KEY]))
        return reply
    if asked != FINGERPRINT_QUERY:
        raise SiteRoundError(SiteErrorCode.UNKNOWN_QUERY, f"the server asked for {asked!r}, which this site "
                                                          "does not answer")
    fingerprint = site_fingerprint(load_dataset(settings.data_dir))
    text = json.dumps(fingerprint.to_dict(), allow_nan=False)
    return RecordDict({DATA_FINGERPRINT_KEY: ConfigRecord({DATA_FINGERPRINT_KEY: text})})


_HANDLERS: dict[str, Handler] = {TRAIN: _train, EVALUATE: _evaluate, MessageType.QUERY: _query}


def _received_model(
    content: RecordDict, config: ConfigRecord, settings: SiteSettings, privacy: PrivacySettings | None = None,
) -> tuple[SegmentationAlgorithm, DatasetIndex, HeContext | None]:
    """The federation's model with the message's global weights (decrypted with HE), the site's dataset
    and, when the federation encrypts, the site's HE context (checked against the federation's key)."""
    if MODEL_KEY not in config or len(content.array_records) != 1:
        raise SiteRoundError(SiteErrorCode.MODEL, "the message carries no model description or no weights")
    fingerprint = config.get(FINGERPRINT_KEY)
    he = site_context(settings.he_secret_context, fingerprint if isinstance(fingerprint, str) else None)
    training = model_from_json(str(config[MODEL_KEY]))
    training = replace(training, proximal_mu=float(config.get("proximal-mu", 0.0)))
    dataset = load_dataset(settings.data_dir)
    check_labels(dataset, training.labels)
    algorithm = SegmentationAlgorithm(training, privacy=privacy)
    record = next(iter(content.array_records.values()))
    arrays = {name: array.numpy() for name, array in record.items()}
    if is_encrypted(arrays):
        if he is None:
            raise SiteRoundError(SiteErrorCode.MODEL, "the global model is encrypted, but with no key named")
        arrays = decrypt_global(he, arrays, named_weights(algorithm))
    load_named_weights(algorithm, arrays)
    return algorithm, dataset, he


def _keep_global_model(
    arrays: dict[str, np.ndarray], algorithm: SegmentationAlgorithm, local_epochs: int, model_round: int,
    state: RecordDict, settings: SiteSettings, events: RoundEvents,
) -> None:
    """Save the received global model of finished round `model_round` (atomically, over the one kept)
    unless the site already keeps that round's or a later one; round 0's is the initial model, not a
    federation's result, and is never kept."""
    kept = _site_memory(state)
    if model_round < 1 or int(kept.get(_KEPT_ROUND, 0)) >= model_round:
        return
    save_global_model(settings.event_file.parent / GLOBAL_MODEL_NAME, algorithm.config, arrays, model_round,
                      local_epochs)
    kept[_KEPT_ROUND] = model_round
    state[_STATE_KEY] = kept
    events.emit("global-model", round=model_round)


def _open_privacy_account(
    algorithm: SegmentationAlgorithm, dataset: DatasetIndex, epochs: int, state: RecordDict,
    settings: SiteSettings,
) -> None:
    """Continue the site's privacy account (Context.state, else its file, which outlives a restart) and
    refuse the round, before any step, when it would spend more than the site's epsilon budget."""
    assert algorithm.privacy is not None
    record = state.config_records.get(_PRIVACY_KEY)
    try:
        if record is not None:
            algorithm.privacy.load_state(json.loads(str(record[_PRIVACY_KEY])))
        elif settings.privacy_account.is_file():
            algorithm.privacy.load_state(json.loads(settings.privacy_account.read_text(encoding="utf-8")))
    except (ValueError, TypeError, ConfigError) as error:  # never start the account afresh
        raise SiteRoundError(SiteErrorCode.PRIVACY_BUDGET, f"the privacy account is unusable, so what this "
                                                           f"site has spent is unknown: {error}") from None
    algorithm.check_budget(dataset, epochs)  # PrivacyBudgetError: code 108 (task.error_code)


def _keep_privacy_account(
    algorithm: SegmentationAlgorithm, state: RecordDict, settings: SiteSettings
) -> None:
    """The account in Context.state and, atomically, in its file beside the site's event file."""
    assert algorithm.privacy is not None
    text = json.dumps(algorithm.privacy.state())
    state[_PRIVACY_KEY] = ConfigRecord({_PRIVACY_KEY: text})
    write_text_atomic(settings.privacy_account, text)


def _restore_optimizer(algorithm: SegmentationAlgorithm, state: RecordDict) -> None:
    """Continue from the optimizer state of this site's previous round: with short rounds, AdamW's moments
    started afresh every round would spend each round warming up (docs/federation.md)."""
    record = state.array_records.get(_OPTIMIZER_KEY)
    if record is not None and not algorithm.load_optimizer_arrays(
        {name: array.numpy() for name, array in record.items()}
    ):
        logger.warning("the kept optimizer state does not fit the federation's model; starting afresh")


def _announce_plan(algorithm: SegmentationAlgorithm, state: RecordDict, events: RoundEvents) -> None:
    """The plan the server sent, once per run in the site's own events, so the site's page shows the plan
    its data is prepared by even when nobody follows the server's events."""
    kept = _site_memory(state)
    if kept.get(_PLAN_ANNOUNCED):
        return
    plan = algorithm.config.plan
    events.emit("plan", source="server", description=plan.describe(), plan=plan.to_dict())
    kept[_PLAN_ANNOUNCED] = True
    state[_STATE_KEY] = kept


def _share_history(config: ConfigRecord, state: RecordDict, events: RoundEvents) -> None:
    """Write the server's per-site history into the event file, each record once per run."""
    if SHARED_HISTORY_KEY not in config:
        return
    shared = _site_memory(state)
    shared[_SHARED_THROUGH] = emit_shared_history(events, str(config[SHARED_HISTORY_KEY]),
                                                  int(shared[_SHARED_THROUGH]))
    state[_STATE_KEY] = shared


def _site_memory(state: RecordDict) -> ConfigRecord:
    """The site's record in Context.state (history shared so far, plan announced); store it back after
    changing it."""
    return state.config_records.get(_STATE_KEY, ConfigRecord({_SHARED_THROUGH: 0}))


def _config(content: RecordDict) -> ConfigRecord:
    return content.config_records.get(CONFIG_KEY, ConfigRecord())


def _server_round(content: RecordDict) -> int:
    """The round the message belongs to (0 when the server did not say)."""
    value = _config(content).get("server-round", 0)
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _numbers(metrics: dict[str, float]) -> dict[str, int | float]:
    """Plain Python numbers for a MetricRecord (integers stay integers)."""
    return {key: value if isinstance(value, int) else float(value) for key, value in metrics.items()}


def _describe(error: BaseException) -> str:
    """One line for the site's own event file (never sent): typed errors read as they are."""
    text, kind = first_line(error), type(error).__name__
    return text if isinstance(error, FedSegError) or text == kind else f"{kind}: {text}"


def _error(error: BaseException) -> tuple[int, str]:
    """The error code and the code's name, plus the message only when it is shareable."""
    code, reason = error_code(error).reply
    if isinstance(error, SiteRoundError) and error.shareable:
        reason += f": {error}"
    return code, reason
