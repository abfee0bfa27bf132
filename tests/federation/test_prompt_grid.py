"""PromptGrid: every reply is collected, pulls stop once all arrived, the timeout still ends the wait,
and arrays travel packed both ways while the strategy sees them named."""

from types import SimpleNamespace

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, ConfigRecord, RecordDict

from federation.packed import DATA_KEY, LAYOUT_KEY, PackingError, is_packed, pack, unpack
from federation.prompt_grid import PromptGrid


class SlowSuperLink:
    """A grid stand-in whose replies arrive one per pull, after `delay` empty pulls."""

    def __init__(self, delay: int) -> None:
        self.delay = delay
        self.pulls = 0
        self.pushed: list = []

    def push_messages(self, messages):
        self.pushed = list(messages)
        return [f"id-{message.name}" for message in self.pushed]

    def pull_messages(self, message_ids):
        self.pulls += 1
        if self.pulls <= self.delay or not message_ids:
            return []
        first = sorted(message_ids)[0]
        return [message(f"reply-{first}", reply_to=first)]

    def get_node_ids(self):
        return [1, 2, 3]


def message(name: str, content: RecordDict | None = None, reply_to: str = ""):
    """The parts of a Flower Message the grid touches."""
    return SimpleNamespace(name=name, content=content, has_content=lambda: content is not None,
                           metadata=SimpleNamespace(reply_to_message_id=reply_to))


def weights() -> ArrayRecord:
    return ArrayRecord({"conv.weight": Array(np.arange(12, dtype=np.float32).reshape(3, 4)),
                        "conv.bias": Array(np.ones(3, np.float32)), "steps": Array(np.array(7))})


def test_every_reply_is_collected_and_pulling_stops_when_the_last_arrives():
    link = SlowSuperLink(delay=2)
    replies = PromptGrid(link, poll_seconds=0.0).send_and_receive([message(n) for n in "abc"], timeout=60)
    assert sorted(reply.name for reply in replies) == ["reply-id-a", "reply-id-b", "reply-id-c"]
    assert link.pulls == 2 + 3


def test_the_timeout_ends_the_wait_with_the_replies_so_far():
    link = SlowSuperLink(delay=10**9)
    assert PromptGrid(link, poll_seconds=0.01).send_and_receive([message("a")], timeout=0.05) == []
    assert 1 < link.pulls < 100


def test_everything_else_is_the_wrapped_grids():
    assert PromptGrid(SlowSuperLink(delay=0)).get_node_ids() == [1, 2, 3]


def test_arrays_go_out_packed_and_come_back_named():
    link = SlowSuperLink(delay=0)
    reply = message("r", RecordDict({"arrays": pack(weights()), "metrics": ConfigRecord({"n": 1})}), "id-a")
    link.pull_messages = lambda ids: [reply]
    sent = message("a", RecordDict({"arrays": weights(), "config": ConfigRecord({"server-round": 1})}))
    PromptGrid(link, poll_seconds=0.0).send_and_receive([sent], timeout=5)
    assert is_packed(link.pushed[0].content.array_records["arrays"])
    assert link.pushed[0].content.config_records["config"]["server-round"] == 1
    back = reply.content.array_records["arrays"]
    assert list(back) == list(weights())
    for name, array in weights().items():
        got, expected = back[name].numpy(), array.numpy()
        np.testing.assert_array_equal(got, expected)
        assert (got.dtype, got.shape) == (expected.dtype, expected.shape)


def test_broken_packing_is_a_packing_error_and_a_broken_reply_stays_as_it_came():
    packed = pack(weights())
    short = ArrayRecord({DATA_KEY: Array(packed[DATA_KEY].numpy()[:-4]), LAYOUT_KEY: packed[LAYOUT_KEY]})
    garbage = ArrayRecord({DATA_KEY: packed[DATA_KEY], LAYOUT_KEY: Array(np.frombuffer(b"[[1", np.uint8))})
    objects = ArrayRecord({DATA_KEY: packed[DATA_KEY],
                           LAYOUT_KEY: Array(np.frombuffer(b'[["x", "|O", [2]]]', np.uint8))})
    for broken in (short, garbage, objects):
        with pytest.raises(PackingError):
            unpack(broken)
    link = SlowSuperLink(delay=0)
    reply = message("r", RecordDict({"arrays": short}), "id-a")
    link.pull_messages = lambda ids: [reply]
    PromptGrid(link, poll_seconds=0.0).send_and_receive([message("a")], timeout=5)
    assert is_packed(reply.content.array_records["arrays"])  # validation then drops it: wrong keys
    assert not is_packed(unpack(packed)) and list(unpack(weights())) == list(weights())
