"""Who reads what, in which order: the loader's work plan, computed from metadata alone.

The unit of work is a row range of one row group of one shard (:class:`WorkUnit`). Every
global worker (``rank * num_workers + worker_id``) derives the same list of units for an epoch,
shuffles it with the same seed, and takes every G-th unit (G = ranks x workers), so each sample
belongs to exactly one worker. When there are fewer row groups than global workers, row groups
are cut into row ranges so that nobody idles while another duplicates work.

The order in which a worker *emits* samples (row-group order, then a bounded shuffle buffer) is
also computed here from row counts only, as a list of ``(unit, row)`` keys. That makes
resumption exact and cheap: a resumed worker recomputes the list, skips the keys it already
yielded, and reads only the units that still hold unseen rows.
"""

from __future__ import annotations

import hashlib
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from logitcache.errors import ConfigError


@dataclass(frozen=True)
class WorkUnit:
    """Rows ``[start, stop)`` of row group ``row_group`` of shard number ``shard``."""

    shard: int
    row_group: int
    start: int
    stop: int

    @property
    def rows(self) -> int:
        return self.stop - self.start


def split_units(row_groups: Sequence[tuple[int, int, int]], min_units: int) -> list[WorkUnit]:
    """One unit per row group ``(shard, row_group, rows)``; cut into row ranges when there are
    fewer row groups than ``min_units`` (the number of global workers)."""
    groups = [g for g in row_groups if g[2] > 0]
    pieces = max(1, math.ceil(min_units / len(groups))) if groups else 1
    units = []
    for shard, rg, rows in groups:
        bounds = np.linspace(0, rows, min(pieces, rows) + 1).round().astype(int)
        for a, b in zip(bounds[:-1], bounds[1:]):
            if b > a:
                units.append(WorkUnit(shard, rg, int(a), int(b)))
    return units


def epoch_rng(seed: int, epoch: int, *salt: int) -> random.Random:
    """A private RNG for (seed, epoch, salt...): the same on every machine and Python version."""
    digest = hashlib.sha256(repr((seed, epoch, *salt)).encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


def assign_units(
    units: list[WorkUnit], *, seed: int, epoch: int, shuffle: bool, global_worker: int, world: int
) -> list[int]:
    """Indices into ``units`` read by ``global_worker``: a shared shuffle, then round-robin."""
    if not 0 <= global_worker < world:
        raise ConfigError(f"global worker {global_worker} outside [0, {world})")
    order = list(range(len(units)))
    if shuffle:
        epoch_rng(seed, epoch).shuffle(order)
    return order[global_worker::world]


def emission_order(
    unit_rows: Sequence[np.ndarray], *, buffer_size: int, rng: random.Random | None
) -> list[tuple[int, int]]:
    """Keys ``(i, row)`` in the order a bounded shuffle buffer would emit them.

    ``unit_rows[i]`` lists the rows of the i-th unit (in read order) that this worker yields.
    Rows enter the buffer in read order; once it holds ``buffer_size`` rows, each new row
    replaces a uniformly chosen one, which is emitted. ``rng=None`` or a buffer of 0/1 keeps
    read order.
    """
    keys = ((i, int(r)) for i, rows in enumerate(unit_rows) for r in rows)
    if rng is None or buffer_size <= 1:
        return list(keys)
    out: list[tuple[int, int]] = []
    buf: list[tuple[int, int]] = []
    randrange = rng.randrange
    for key in keys:
        if len(buf) < buffer_size:
            buf.append(key)
            continue
        j = randrange(buffer_size)
        out.append(buf[j])
        buf[j] = key
    rng.shuffle(buf)
    out.extend(buf)
    return out
