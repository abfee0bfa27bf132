"""What a training round cost, as the server records it: every sampled site's part (accepted, dropped with
its reason code, answered with an error, or no reply) with the array bytes that travelled each way, the
slowest site's own work and the overhead, and the per-round table `fedseg server status` and the demo
report print.

The byte counts are checked against what a SuperLink stand-in under the server's PromptGrid carried: the
messages as pushed and the replies as the sites sent them (packed), before the grid unpacks them.
"""

import math

import numpy as np
import pytest
from fed_replies import FakeGrid, global_arrays, shifted
from flwr.app import Array, ArrayRecord, ConfigRecord, Error, Message, MetricRecord, RecordDict

from federation.packed import pack
from federation.prompt_grid import PromptGrid
from federation.round_costs import NO_REPLY, RoundSummary, SiteCost, round_summaries, round_table, site_costs
from federation.strategy import ValidatingFedAvg


def carried(content: RecordDict) -> int:
    """The Array payload bytes of a message's content as the wire holds it."""
    return sum(len(array.data) for record in content.array_records.values() for array in record.values())


class Wire:
    """A SuperLink stand-in: names each pushed message, answers with `answers[node]` (a site's reply as it
    travels; an Error as an error reply; no entry: never answers) and notes the bytes it carried each way,
    per node."""

    def __init__(self, answers: dict[int, RecordDict | Error]) -> None:
        self.answers = answers
        self.pushed: list[Message] = []
        self.sent: dict[int, int] = {}
        self.received: dict[int, int] = {}

    def push_messages(self, messages):
        for message in messages:
            node = message.metadata.dst_node_id
            message.metadata.__dict__["_message_id"] = f"train-1-to-{node}"  # as the SuperLink does
            self.sent[node] = carried(message.content)
            self.pushed.append(message)
        return [message.metadata.message_id for message in messages]

    def pull_messages(self, message_ids):
        replies = []
        for message in self.pushed:
            node = message.metadata.dst_node_id
            if message.metadata.message_id not in message_ids or node not in self.answers:
                continue
            answer = self.answers[node]
            self.received[node] = carried(answer) if isinstance(answer, RecordDict) else 0
            replies.append(Message(answer, reply_to=message))
        return replies


def train_reply(arrays: dict[str, np.ndarray] | ArrayRecord, site: str, **metrics: float) -> RecordDict:
    """A site's train reply as it travels: its arrays packed, as the site packs them (an ArrayRecord
    travels as it is)."""
    if not isinstance(arrays, ArrayRecord):
        arrays = pack(ArrayRecord({name: Array(array) for name, array in arrays.items()}))
    return RecordDict({
        "arrays": arrays,
        "metrics": MetricRecord({"num-examples": 10, **metrics}),
        "site": ConfigRecord({"site-name": site}),
    })


def one_round(answers: dict[int, RecordDict | Error], nodes: list[int]) -> tuple[dict[str, SiteCost], Wire]:
    """Round 1 as the server runs it: configure, send through PromptGrid, judge; each site's part by name."""
    strategy = ValidatingFedAvg(min_train_nodes=len(nodes), min_available_nodes=len(nodes))
    record = ArrayRecord({name: Array(array) for name, array in global_arrays().items()})
    messages = list(strategy.configure_train(1, record, ConfigRecord({"local-epochs": 1}), FakeGrid(nodes)))
    wire = Wire(answers)
    replies = PromptGrid(wire, poll_seconds=0.001).send_and_receive(messages, timeout=0.2)
    strategy.history.sent(messages)
    strategy.aggregate_train(1, replies)
    costs = site_costs(1, messages, replies, strategy.history)
    assert len(costs) == len(nodes)
    return {cost.site: cost for cost in costs}, wire


def test_every_sampled_site_is_accounted_for_with_the_bytes_that_travelled(server_identity):
    wrong_shape = {**shifted(0.1), "conv.bias": np.zeros(3, np.float32)}
    costs, wire = one_round({
        1: train_reply(shifted(0.1), "CT Hospital", **{"site-seconds": 2.5}),
        2: train_reply(wrong_shape, "MR Clinic", **{"site-seconds": 4.0}),
        4: Error(code=3, reason="the site failed"),
    }, nodes=[1, 2, 3, 4])

    assert {site: cost.status for site, cost in costs.items()} == {
        "CT Hospital": "accepted", "MR Clinic": "shape-mismatch", "node-3": NO_REPLY, "node-4": "site-error"}
    assert {site: cost.work_s for site, cost in costs.items()} == {
        "CT Hospital": 2.5, "MR Clinic": 4.0, "node-3": None, "node-4": None}
    nodes = {"CT Hospital": 1, "MR Clinic": 2, "node-3": 3, "node-4": 4}
    for site, node in nodes.items():
        assert costs[site].array_bytes_sent == wire.sent[node] > 0
    assert costs["CT Hospital"].array_bytes_received == wire.received[1]
    assert costs["MR Clinic"].array_bytes_received == wire.received[2]
    # The accepted reply has the global model's names, shapes and dtypes: it packs to the message's size.
    assert wire.received[1] == wire.sent[1] and wire.received[2] != wire.sent[2]
    assert costs["node-4"].array_bytes_received == 0  # an error reply carries no arrays
    assert costs["node-3"].array_bytes_received is None

    summary = RoundSummary(1, 30.0, tuple(costs.values()))
    assert (summary.work_s, summary.overhead_s) == (None, None)  # two sites worked for an unknown time


def test_a_site_that_reports_no_seconds_or_nan_leaves_the_overhead_unknown(server_identity):
    costs, _ = one_round({
        1: train_reply(shifted(0.1), "CT Hospital", **{"site-seconds": 2.5}),
        2: train_reply(shifted(0.2), "Old Site"),  # a site of an earlier version
        3: train_reply(shifted(0.3), "Odd Site", **{"site-seconds": math.nan}),
    }, nodes=[1, 2, 3])
    assert costs["Old Site"].status == "accepted" and costs["Old Site"].work_s is None
    assert costs["Odd Site"].status == "non-finite" and costs["Odd Site"].work_s is None
    assert RoundSummary(1, 9.0, tuple(costs.values())).overhead_s is None


def test_a_reply_that_cannot_be_packed_counts_as_it_came(server_identity):
    junk = ArrayRecord({"conv.weight": Array(dtype="float32", shape=(2, 3), stype="numpy.ndarray",
                                             data=b"not an array")})
    honest = train_reply(shifted(0.1), "CT Hospital", **{"site-seconds": 1.0})
    costs, wire = one_round({1: train_reply(junk, "Odd Site"), 2: honest}, nodes=[1, 2])
    assert costs["Odd Site"].status == "malformed"
    assert costs["Odd Site"].array_bytes_received == wire.received[1] == len(b"not an array")
    assert costs["CT Hospital"].array_bytes_received == wire.received[2] == wire.sent[2]


def cost(site: str, status: str = "accepted", work: float | None = 1.0, sent: int = 4096,
         received: int | None = 4096) -> SiteCost:
    return SiteCost(site, status, work, sent, received)


def test_the_slowest_site_sets_the_work_and_the_rest_of_the_wall_time_is_overhead():
    summary = RoundSummary(3, 10.0, (cost("A", work=6.5), cost("B", "norm-outlier", work=8.0)))
    assert summary.work_s == 8.0 and summary.overhead_s == pytest.approx(2.0)
    data = summary.to_dict()
    assert (data["round"], data["wall_s"], data["work_s"], data["overhead_s"]) == (3, 10.0, 8.0, 2.0)
    assert data["sites"][1] == {"site": "B", "status": "norm-outlier", "work_s": 8.0,
                                "array_bytes_sent": 4096, "array_bytes_received": 4096}
    assert RoundSummary.from_dict(data) == summary
    assert RoundSummary(1, 5.0, ()).overhead_s is None  # no site was asked


@pytest.mark.parametrize("damage", [
    lambda data: data.pop("wall_s"),
    lambda data: data.update(round="3"),
    lambda data: data.update(sites="A"),
    lambda data: data["sites"][0].update(array_bytes_sent=-1),
    lambda data: data["sites"][0].update(work_s="fast"),
    lambda data: data["sites"][0].pop("status"),
])
def test_a_damaged_summary_reads_as_none(damage):
    data = RoundSummary(3, 10.0, (cost("A"),)).to_dict()
    damage(data)
    assert RoundSummary.from_dict(data) is None


def test_the_summaries_of_a_run_are_its_checkpoints_latest_per_round():
    first = RoundSummary(1, 10.0, (cost("A"),))
    again = RoundSummary(2, 12.0, (cost("A"),))
    events = [
        {"kind": "checkpoint", "round": 1, "summary": first.to_dict()},
        {"kind": "checkpoint", "round": 2, "summary": RoundSummary(2, 99.0, (cost("A"),)).to_dict()},
        {"kind": "started", "rounds": 3, "round": 1},  # resumed after round 1: round 2 is trained again
        {"kind": "checkpoint", "round": 2, "summary": again.to_dict()},
        {"kind": "checkpoint", "round": 3},  # a run from before round summaries
        {"kind": "evaluation", "round": 3, "summary": first.to_dict()},
    ]
    assert round_summaries(events) == [first, again]


def test_the_round_table_shows_seconds_and_each_sites_part_with_kib_in_and_out():
    summaries = [
        RoundSummary(1, 12.34, (cost("CT", work=10.0, sent=2048, received=1024),
                                cost("MR", "no-reply", work=None, received=None))),
        RoundSummary(2, 9.0, (cost("CT", work=7.04, sent=2_097_152, received=102_400),)),
    ]
    header, rows = round_table(summaries)
    assert header == ["round", "wall s", "slowest site s", "overhead s", "CT (KiB in/out)", "MR (KiB in/out)"]
    assert rows == [
        ["1", "12.3", "-", "-", "accepted 1.0/2.0", "no-reply -/4.0"],
        ["2", "9.0", "7.0", "2.0", "accepted 100/2048", "-"],  # MR was not asked in round 2
    ]
