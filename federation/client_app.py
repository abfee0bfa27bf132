"""The site's Flower ClientApp: hands each train, evaluate or query message to the site's own work.

`fedseg site` runs it in its site worker (federation.site_worker), which keeps the engine loaded; a
stock SuperNode started by hand runs it in a flwr-clientapp process per message. The work itself is
federation.site_work's, loaded on the first message, so importing this module loads no engine. Only
arrays and numbers leave the site, plus its display name, and a failure is answered with a code
(federation.site_errors), never with its text.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from flwr.app import ArrayRecord, Context, Error, Message, MessageType, RecordDict
from flwr.clientapp import ClientApp

from federation.packed import PackingError, is_packed, pack, unpack
from federation.site_errors import SiteErrorCode
from federation.site_history import EVALUATE, TRAIN
from federation.site_protocol import SiteAnswer

logger = logging.getLogger(__name__)

app = ClientApp()


@app.train()
def train(message: Message, context: Context) -> Message:
    """Score the global model, train it locally, score it again; reply with the new weights."""
    return _reply(message, context, _answer(TRAIN, message, context))


@app.evaluate()
def evaluate(message: Message, context: Context) -> Message:
    """Score the global model on the site's validation cases."""
    return _reply(message, context, _answer(EVALUATE, message, context))


@app.query()
def query(message: Message, context: Context) -> Message:
    """Answer the server's question outside a round: the fingerprint of the site's training data."""
    return _reply(message, context, _answer(MessageType.QUERY, message, context))


def _answer(kind: str, message: Message, context: Context) -> SiteAnswer:
    try:
        content = _converted(message.content, unpack)
    except PackingError as error:
        logger.error("the server's message is unusable: %s", error)
        return SiteAnswer(context.state, error=SiteErrorCode.MODEL.reply)
    from federation.site_work import answer

    return answer(kind, content, context.node_config, context.state)


def _reply(message: Message, context: Context, answer: SiteAnswer) -> Message:
    """The reply to the server, its arrays packed when the server packed its own (federation.packed); the
    site's state (kept by the SuperNode between messages) is updated."""
    if answer.state is not context.state:
        for key in list(answer.state):
            context.state[key] = answer.state[key]
    if answer.error is not None:
        return Message(Error(code=answer.error[0], reason=answer.error[1]), reply_to=message)
    packed = any(is_packed(record) for record in message.content.array_records.values())
    return Message(_converted(answer.content, pack) if packed else answer.content, reply_to=message)


def _converted(content: RecordDict, convert: Callable[[ArrayRecord], ArrayRecord]) -> RecordDict:
    """The content with every ArrayRecord packed or unpacked; the other records as they are."""
    return RecordDict({key: convert(record) if isinstance(record, ArrayRecord) else record
                       for key, record in content.items()})
