"""The no-op Flower app of bench/flower_overhead.py: its ServerApp sends the demo model's arrays to every
site for a number of rounds and times each round; its ClientApp sends them straight back.

Not part of the installed package: the benchmark copies this file into the Flower app project it submits.
Run config: rounds, nodes, fast (the project's PromptGrid, else Flower's own send_and_receive), shapes
(JSON: the arrays' shapes by name) and out (where the round times are written, JSON).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, MessageType, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp

from federation.flower_internals import shorten_object_pulls
from federation.prompt_grid import PromptGrid

server = ServerApp()
client = ClientApp()


@client.train()
def echo(message: Message, context: Context) -> Message:
    """No work: the arrays go back as they came."""
    return Message(message.content, reply_to=message)


@server.main()
def rounds(grid: Grid, context: Context) -> None:
    config = context.run_config
    shapes = json.loads(str(config["shapes"]))
    arrays = ArrayRecord({name: Array(np.zeros(shape, np.float32)) for name, shape in shapes.items()})
    while len(nodes := sorted(grid.get_node_ids())) < int(config["nodes"]):
        time.sleep(0.1)
    fast = bool(config["fast"])
    if fast:
        shorten_object_pulls()  # as federation.server_app does
    sender = PromptGrid(grid) if fast else grid
    walls = []
    for number in range(1, int(config["rounds"]) + 1):
        start = time.monotonic()
        messages = [Message(RecordDict({"arrays": arrays, "config": ConfigRecord({"server-round": number})}),
                            dst_node_id=node, message_type=MessageType.TRAIN) for node in nodes]
        replies = sender.send_and_receive(messages, timeout=600)
        walls.append(time.monotonic() - start)
        if len(replies) != len(nodes) or any(reply.has_error() for reply in replies):
            raise RuntimeError(f"round {number}: {len(replies)} replies from {len(nodes)} sites, or an error")
    Path(str(config["out"])).write_text(json.dumps(walls), encoding="utf-8")
