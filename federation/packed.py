"""A message's arrays packed into two Flower arrays for the trip between the server and the sites.

Flower stores and sends every Array of a message as an object of its own, one request per hop (site ->
SuperNode -> SuperLink -> ServerApp, and back). A U-Net's 60-odd weight arrays made that 3 to 8 s of
every round; packed they are two objects: the bytes of all arrays in a row, and a JSON layout (names,
dtypes, shapes). What the arrays hold is unchanged, so validation and averaging see the named arrays.
"""

from __future__ import annotations

import json
import math

import numpy as np
from flwr.app import Array, ArrayRecord

from federation.he.packing import Layout  # names, shapes and dtypes: the same description HE uses

DATA_KEY = "packed/data"
LAYOUT_KEY = "packed/layout"


class PackingError(ValueError):
    """A packed record whose layout does not describe its data."""


def is_packed(record: ArrayRecord) -> bool:
    return set(record) == {DATA_KEY, LAYOUT_KEY}


def pack(record: ArrayRecord) -> ArrayRecord:
    """The record's arrays as one byte array and its layout (a packed record stays as it is)."""
    if is_packed(record):
        return record
    arrays = {name: array.numpy() for name, array in record.items()}
    layout = Layout.of(arrays)
    text = json.dumps({"names": layout.names, "shapes": layout.shapes, "dtypes": layout.dtypes})
    data = b"".join(array.tobytes() for array in arrays.values())
    return ArrayRecord({
        DATA_KEY: Array(np.frombuffer(data, dtype=np.uint8).copy()),
        LAYOUT_KEY: Array(np.frombuffer(text.encode(), dtype=np.uint8).copy()),
    })


def unpack(record: ArrayRecord) -> ArrayRecord:
    """The named arrays of a packed record (any other record is returned as it is); PackingError when the
    layout is unreadable or does not add up to the data."""
    if not is_packed(record):
        return record
    data = record[DATA_KEY].numpy()
    try:
        fields = json.loads(record[LAYOUT_KEY].numpy().tobytes())
        layout = Layout(names=tuple(str(name) for name in fields["names"]),
                        shapes=tuple(tuple(int(n) for n in shape) for shape in fields["shapes"]),
                        dtypes=tuple(str(dtype) for dtype in fields["dtypes"]))
        dtypes = [np.dtype(dtype) for dtype in layout.dtypes]
    except (ValueError, TypeError, KeyError) as error:
        raise PackingError(f"the packed layout is unreadable ({type(error).__name__})") from None
    if not len(layout.names) == len(layout.shapes) == len(dtypes):
        raise PackingError("the packed layout's names, shapes and dtypes differ in number")
    if any(d.kind not in "biufc" for d in dtypes) or any(n < 0 for shape in layout.shapes for n in shape):
        raise PackingError("the packed layout names a non-numeric dtype or a negative size")
    sizes = [d.itemsize * math.prod(shape) for d, shape in zip(dtypes, layout.shapes, strict=True)]
    if data.dtype != np.uint8 or data.ndim != 1 or sum(sizes) != data.size:
        raise PackingError(f"the packed layout describes {sum(sizes)} bytes, the data has {data.size}")
    arrays, start = {}, 0
    for name, dtype, shape, size in zip(layout.names, dtypes, layout.shapes, sizes, strict=True):
        chunk = data[start:start + size].tobytes()
        arrays[name] = Array(np.frombuffer(chunk, dtype=dtype).reshape(shape))
        start += size
    return ArrayRecord(arrays)
