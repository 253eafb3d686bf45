"""Byte planes: integers split into their bytes, most significant plane first, one blob per row.

Splitting a column of small-ish integers into byte planes puts the (mostly zero) high bytes
next to each other, which zstd then squeezes to almost nothing; the low bytes stay together
for zstd's entropy stage. Each row's blob is self-contained (``planes x entries`` bytes, plane
major), so any slice of rows decodes on its own. Columns are ``large_binary`` so one table can
exceed 2 GiB.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from logitcache.errors import CodecError


def planes_for(max_value: int) -> int:
    """Bytes needed for values in ``[0, max_value]`` (at least 1)."""
    return max(1, (int(max_value).bit_length() + 7) // 8)


def _kernels():
    """The compiled loops, imported on first use (numba's import costs ~0.5 s)."""
    from logitcache.codecs import kernels

    return kernels


def pack_rows(values: np.ndarray, entry_offsets: np.ndarray, nplanes: int) -> pa.Array:
    """``values[entry_offsets[r]:entry_offsets[r+1]]`` -> row r's blob of byte planes."""
    values = np.ascontiguousarray(values).reshape(-1)
    if values.size and values.dtype.kind == "i" and values.min() < 0:
        raise CodecError("byte planes hold non-negative integers only")
    if values.size and nplanes < 4 and int(values.max()) >> (8 * nplanes):
        raise CodecError(f"a value does not fit in {nplanes} byte planes")
    offs = np.ascontiguousarray(entry_offsets, np.int64)
    data = np.empty(nplanes * values.size, np.uint8)
    _kernels().pack(values.astype(np.uint32, copy=False), offs, nplanes, data)
    return pa.LargeBinaryArray.from_buffers(
        pa.large_binary(),
        len(offs) - 1,
        [None, pa.py_buffer(offs * nplanes), pa.py_buffer(data)],
    )


def blob_parts(array: pa.Array | pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray]:
    """``(offsets int64 [rows+1], data uint8)`` of a binary column, without copying the data."""
    if isinstance(array, pa.ChunkedArray):
        array = array.combine_chunks() if array.num_chunks != 1 else array.chunk(0)
    if not pa.types.is_large_binary(array.type):
        array = array.cast(pa.large_binary())
    if array.null_count:
        raise CodecError("a codec column holds nulls")
    _, off_buf, data_buf = array.buffers()
    offs = np.frombuffer(off_buf, np.int64)[array.offset : array.offset + len(array) + 1]
    data = np.frombuffer(data_buf if data_buf is not None else b"", np.uint8)
    return offs, data  # read-only either way: the kernels then compile one specialisation


def check_blobs(offs: np.ndarray, counts: np.ndarray, nplanes: int) -> None:
    """Row r's blob must hold ``counts[r]`` entries of ``nplanes`` bytes (else: corrupt)."""
    if len(offs) != len(counts) + 1:
        raise CodecError(f"codec column has {len(offs) - 1} rows, expected {len(counts)}")
    sizes = np.diff(offs)
    if not np.array_equal(sizes, counts * nplanes):
        bad = int(np.flatnonzero(sizes != counts * nplanes)[0])
        raise CodecError(
            f"row {bad}: codec blob has {int(sizes[bad])} bytes, expected "
            f"{int(counts[bad]) * nplanes} ({int(counts[bad])} entries x {nplanes} planes)"
        )


def unpack_rows(
    array: pa.Array | pa.ChunkedArray, counts: np.ndarray, nplanes: int, dtype
) -> np.ndarray:
    """Inverse of :func:`pack_rows`: row r must hold ``counts[r]`` entries."""
    offs, data = blob_parts(array)
    counts = np.asarray(counts, np.int64)
    check_blobs(offs, counts, nplanes)
    out = np.empty(int(counts.sum()), dtype)
    _kernels().unpack(data, np.ascontiguousarray(offs), counts, nplanes, out)
    return out
