"""Moving a unit's rows and scored samples between pipeline stages as bytes.

Stages may run in different processes (Ray workers), so each hop carries one unit as a single
``.npz`` blob: every per-row array is flattened and concatenated, with its per-row shape kept
alongside. ``np.load(allow_pickle=False)`` reads it back, so nothing here unpickles data.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any

import numpy as np

_ID = "sample_id"


def pack_rows(rows: Sequence[dict[str, Any]]) -> bytes:
    """Per-row dicts of arrays (same keys in every row, shapes free) -> one blob."""
    arrays: dict[str, np.ndarray] = {_ID: np.array([str(r[_ID]) for r in rows])}
    keys = [k for k in rows[0] if k != _ID] if rows else []
    for key in keys:
        parts = [np.asarray(r[key]) for r in rows]
        ndim = parts[0].ndim
        arrays[f"{key}.shape"] = np.array([p.shape for p in parts], dtype=np.int64).reshape(
            len(parts), ndim
        )
        arrays[key] = np.concatenate([p.reshape(-1) for p in parts])
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def unpack_rows(blob: bytes) -> list[dict[str, Any]]:
    """Inverse of :func:`pack_rows`."""
    with np.load(io.BytesIO(blob), allow_pickle=False) as z:
        data = {k: z[k] for k in z.files}
    ids = [str(s) for s in data.pop(_ID)]
    rows: list[dict[str, Any]] = [{_ID: s} for s in ids]
    for key in [k for k in data if not k.endswith(".shape")]:
        shapes = data[f"{key}.shape"]
        flat = data[key]
        sizes = (
            np.prod(shapes, axis=1).astype(np.int64)
            if shapes.shape[1]
            else np.ones(len(ids), np.int64)
        )
        offsets = np.concatenate([[0], np.cumsum(sizes)])
        for i, row in enumerate(rows):
            row[key] = flat[offsets[i] : offsets[i + 1]].reshape(tuple(shapes[i]))
    return rows
