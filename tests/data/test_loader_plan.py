"""The work plan alone: unit splitting, assignment and the bounded shuffle's emission order."""

from __future__ import annotations

import numpy as np

from logitcache.data.plan import assign_units, emission_order, epoch_rng, split_units


def test_split_units_cuts_row_groups_only_when_workers_outnumber_them():
    groups = [(0, 0, 10), (0, 1, 3), (1, 0, 0), (2, 0, 7)]
    assert len(split_units(groups, 2)) == 3  # empty row group dropped, none cut
    units = split_units(groups, 8)
    assert len(units) >= 8
    for shard, rg, rows in groups:
        covered = sorted(
            r
            for u in units
            if (u.shard, u.row_group) == (shard, rg)
            for r in range(u.start, u.stop)
        )
        assert covered == list(range(rows))


def test_assignment_is_a_partition_and_shuffles_by_epoch():
    units = split_units([(s, g, 5) for s in range(3) for g in range(4)], 1)
    for world in (1, 3, 5, 20):
        parts = [
            assign_units(units, seed=1, epoch=0, shuffle=True, global_worker=w, world=world)
            for w in range(world)
        ]
        flat = sorted(i for p in parts for i in p)
        assert flat == list(range(len(units)))
    e0 = assign_units(units, seed=1, epoch=0, shuffle=True, global_worker=0, world=1)
    e1 = assign_units(units, seed=1, epoch=1, shuffle=True, global_worker=0, world=1)
    assert e0 != e1
    assert e0 == assign_units(units, seed=1, epoch=0, shuffle=True, global_worker=0, world=1)


def test_emission_order_is_a_bounded_permutation():
    rows = [np.arange(n) for n in (5, 0, 7, 3, 9)]
    keys = [(i, int(r)) for i, rr in enumerate(rows) for r in rr]
    for buf in (0, 1, 4, 100):
        order = emission_order(rows, buffer_size=buf, rng=epoch_rng(0, 0))
        assert sorted(order) == sorted(keys)
        if buf <= 1:
            assert order == keys
        else:
            assert order != keys
            # An emitted key was read at most `buf` keys ago (bounded memory).
            for n, key in enumerate(order):
                assert keys.index(key) <= n + buf
    assert emission_order(rows, buffer_size=4, rng=None) == keys
