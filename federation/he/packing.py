"""A model's named arrays as one flat vector and back, and that vector cut into ciphertext-sized chunks.

Encryption works on vectors of N/2 values. Every array of the state dict, in state_dict order, goes
into one float64 vector (integer buffers too, rounded back on the way out), which is cut into chunks
of `slots` values: any model size fits, the last chunk is shorter. Pure NumPy, no encryption here.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Layout:
    """Names, shapes and dtypes of the arrays, in the order they sit in the flat vector."""

    names: tuple[str, ...]
    shapes: tuple[tuple[int, ...], ...]
    dtypes: tuple[str, ...]

    @classmethod
    def of(cls, arrays: Mapping[str, np.ndarray]) -> Layout:
        return cls(
            names=tuple(arrays), shapes=tuple(tuple(np.shape(a)) for a in arrays.values()),
            dtypes=tuple(np.asarray(a).dtype.str for a in arrays.values()),
        )

    @property
    def size(self) -> int:
        """Values in the flat vector."""
        return sum(math.prod(shape) for shape in self.shapes)

    def flatten(self, arrays: Mapping[str, np.ndarray]) -> np.ndarray:
        """The arrays as one float64 vector; ValueError unless names and shapes are this layout's."""
        if set(arrays) != set(self.names):
            first = sorted(set(arrays) ^ set(self.names))[0]
            raise ValueError(f"the arrays do not match the layout (first difference {first!r})")
        for name, shape in zip(self.names, self.shapes, strict=True):
            if tuple(np.shape(arrays[name])) != shape:
                raise ValueError(f"array {name!r} has shape {np.shape(arrays[name])}, not {shape}")
        if not self.names:
            return np.zeros(0)
        return np.concatenate([np.asarray(arrays[name], dtype=np.float64).ravel() for name in self.names])

    def unflatten(self, vector: np.ndarray) -> dict[str, np.ndarray]:
        """The named arrays of a flat vector, in their dtypes (integers rounded to the nearest)."""
        if vector.shape != (self.size,):
            raise ValueError(f"the vector has shape {vector.shape}, the layout needs ({self.size},)")
        arrays, start = {}, 0
        for name, shape, dtype in zip(self.names, self.shapes, self.dtypes, strict=True):
            count = math.prod(shape)
            values = vector[start:start + count].reshape(shape)
            if np.dtype(dtype).kind in "iub":
                values = np.rint(values)
            arrays[name] = values.astype(dtype)
            start += count
        return arrays


def chunk_sizes(size: int, slots: int) -> list[int]:
    """How many values each chunk of a `size`-long vector holds: full chunks, then the rest."""
    full, rest = divmod(size, slots)
    return [slots] * full + ([rest] if rest else [])


def chunks(vector: np.ndarray, slots: int) -> list[np.ndarray]:
    """The vector cut into consecutive pieces of at most `slots` values."""
    return [vector[start:start + slots] for start in range(0, len(vector), slots)]
