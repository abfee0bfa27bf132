"""Reply messages as a SuperLink would hand them to the ServerApp, built without any Flower process."""

import numpy as np
from flwr.app import (
    Array,
    ArrayRecord,
    ConfigRecord,
    Error,
    Message,
    MessageType,
    Metadata,
    MetricRecord,
    RecordDict,
)


def global_arrays() -> dict[str, np.ndarray]:
    """A tiny 'model': a float32 weight, a float32 bias and an int64 counter (like BatchNorm's)."""
    return {
        "conv.weight": np.arange(6, dtype=np.float32).reshape(2, 3) / 10,
        "conv.bias": np.zeros(2, dtype=np.float32),
        "norm.num_batches_tracked": np.array(10, dtype=np.int64),
    }


def _metadata(node_id: int, message_type: str) -> Metadata:
    return Metadata(
        run_id=1, message_id=f"m{node_id}", src_node_id=node_id, dst_node_id=0, reply_to_message_id="",
        group_id="1", created_at=0.0, ttl=60.0, message_type=message_type,
    )


def reply(
    arrays: dict[str, np.ndarray] | None,
    num_examples: float = 10,
    node_id: int = 1,
    site: str | None = None,
    metrics: dict | None = None,
    message_type: str = MessageType.TRAIN,
) -> Message:
    """A site's reply: arrays (None for an evaluate reply), a MetricRecord and optionally its name."""
    content = RecordDict({"metrics": MetricRecord({"num-examples": num_examples, **(metrics or {})})})
    if arrays is not None:
        content["arrays"] = ArrayRecord({key: Array(value) for key, value in arrays.items()})
    if site is not None:
        content["site"] = ConfigRecord({"site-name": site})
    return Message(content, metadata=_metadata(node_id, message_type))


def content_reply(content: RecordDict, node_id: int = 1, message_type: str = MessageType.QUERY) -> Message:
    """A reply with exactly this content (e.g. an answer to the fingerprint query)."""
    return Message(content, metadata=_metadata(node_id, message_type))


def error_reply(node_id: int, message_type: str = MessageType.TRAIN) -> Message:
    return Message(Error(code=3, reason="Traceback ... /home/site/data/secret.nii"),
                   metadata=_metadata(node_id, message_type))


def shifted(delta: float) -> dict[str, np.ndarray]:
    """The global arrays moved by `delta` in every float entry (dtypes kept)."""
    return {
        key: (value + delta).astype(value.dtype) if value.dtype.kind == "f" else value.copy()
        for key, value in global_arrays().items()
    }


class FakeGrid:
    """Just enough of flwr.serverapp.Grid for configure_train to sample nodes."""

    def __init__(self, node_ids: list[int]) -> None:
        self.node_ids = node_ids

    def get_node_ids(self) -> list[int]:
        return list(self.node_ids)
