"""A ClientApp for the fault tests only: federation.client_app, unless FEDSEG_TEST_FAULT says misbehave.

This file is not part of the installed package. A fault test's site worker runs it (FederationSite's
client_app, with this folder on PYTHONPATH); a production site worker runs federation.client_app, which
no configuration can make misbehave. The variable is set per site through the worker's environment:

- "hang": the train handler never returns (the test kills the site mid-round); the fingerprint query
  before round 1 is answered as usual;
- "poison": the site trains honestly, then spoils its reply: a NaN weight in round 1, a wrong-shaped
  array in round 2, num-examples = 1e9 in round 3 (and so on, in turn);
- "hold": round 2's training waits until the file FEDSEG_TEST_RELEASE names exists, then goes on
  honestly: until then the server cannot finish round 2, so its last checkpoint is round 1's.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
from flwr.app import Array, ArrayRecord, Context, Message
from flwr.clientapp import ClientApp

from federation import client_app
from federation.packed import is_packed, pack, unpack

FAULT_VARIABLE = "FEDSEG_TEST_FAULT"
RELEASE_VARIABLE = "FEDSEG_TEST_RELEASE"
HANG = "hang"
POISON = "poison"
HOLD = "hold"
POISONS = ("non-finite", "shape-mismatch", "bad-num-examples")  # the server's reason code for each, by round

app = ClientApp()


@app.train()
def train(message: Message, context: Context) -> Message:
    fault = os.environ.get(FAULT_VARIABLE, "")
    server_round = int(message.content.config_records["config"]["server-round"])
    if fault == HANG:
        time.sleep(3600)
    if fault == HOLD and server_round == 2:
        while not Path(os.environ[RELEASE_VARIABLE]).exists():
            time.sleep(0.1)
    reply = client_app.train(message, context)
    if fault == POISON and not reply.has_error():
        spoil(reply, POISONS[(server_round - 1) % len(POISONS)])
    return reply


@app.evaluate()
def evaluate(message: Message, context: Context) -> Message:
    return client_app.evaluate(message, context)


@app.query()
def query(message: Message, context: Context) -> Message:
    return client_app.query(message, context)


def spoil(reply: Message, poison: str) -> None:
    """Make a valid train reply fail the server's check `poison`."""
    content = reply.content
    if poison == "bad-num-examples":
        content.metric_records["metrics"]["num-examples"] = 10**9
        return
    sent = content.array_records["arrays"]  # packed, as the site answers a packed message
    arrays = {name: array.numpy().copy() for name, array in unpack(sent).items()}
    name = next(name for name, array in arrays.items() if array.dtype.kind == "f")
    if poison == "non-finite":
        arrays[name].flat[0] = np.nan
    else:
        arrays[name] = np.zeros((*arrays[name].shape, 2), arrays[name].dtype)
    spoiled = ArrayRecord({key: Array(value) for key, value in arrays.items()})
    content["arrays"] = pack(spoiled) if is_packed(sent) else spoiled
