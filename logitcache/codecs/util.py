"""Small arrow/numpy helpers shared by the codecs and the shard layer."""

from __future__ import annotations

import numpy as np
import pyarrow as pa


def row_offsets(lengths: np.ndarray) -> np.ndarray:
    """``[0, l0, l0+l1, ...]`` as int64."""
    out = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=out[1:])
    return out


def flat_list(values: np.ndarray, offsets: np.ndarray) -> pa.Array:
    """A list array whose row r is ``values[offsets[r]:offsets[r+1]]`` (no copy of values)."""
    return pa.ListArray.from_arrays(pa.array(offsets, pa.int32()), pa.array(values))


def list_values(array: pa.Array | pa.ChunkedArray, dtype) -> np.ndarray:
    """The concatenated values of a list column, honouring slicing of the array."""
    if isinstance(array, pa.ChunkedArray):
        array = array.combine_chunks() if array.num_chunks != 1 else array.chunk(0)
    flat = array.flatten()
    return flat.to_numpy(zero_copy_only=False).astype(dtype, copy=False)
