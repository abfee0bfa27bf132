"""PromptGrid: every reply is collected, pulls stop once all arrived, the timeout still ends the wait."""

from types import SimpleNamespace

from federation.prompt_grid import PromptGrid


class SlowSuperLink:
    """A grid stand-in whose replies arrive one per pull, after `delay` empty pulls."""

    def __init__(self, delay: int) -> None:
        self.delay = delay
        self.pulls = 0
        self.pushed: list[str] = []

    def push_messages(self, messages):
        self.pushed = [f"id-{message}" for message in messages]
        return list(self.pushed)

    def pull_messages(self, message_ids):
        self.pulls += 1
        if self.pulls <= self.delay or not message_ids:
            return []
        first = sorted(message_ids)[0]
        return [SimpleNamespace(metadata=SimpleNamespace(reply_to_message_id=first), name=f"reply-{first}")]

    def get_node_ids(self):
        return [1, 2, 3]


def test_every_reply_is_collected_and_pulling_stops_when_the_last_arrives():
    link = SlowSuperLink(delay=2)
    replies = PromptGrid(link, poll_seconds=0.0).send_and_receive(["a", "b", "c"], timeout=60)
    assert sorted(reply.name for reply in replies) == ["reply-id-a", "reply-id-b", "reply-id-c"]
    assert link.pulls == 2 + 3


def test_the_timeout_ends_the_wait_with_the_replies_so_far():
    link = SlowSuperLink(delay=10**9)
    assert PromptGrid(link, poll_seconds=0.01).send_and_receive(["a"], timeout=0.05) == []
    assert 1 < link.pulls < 100


def test_everything_else_is_the_wrapped_grids():
    assert PromptGrid(SlowSuperLink(delay=0)).get_node_ids() == [1, 2, 3]
