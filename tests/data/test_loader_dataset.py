"""CacheDataset: exactly-once partitioning, deterministic order, resumption, storage, errors."""

from __future__ import annotations

import logging
import os

import numpy as np
import pytest
from torch.utils.data import DataLoader
from torchdata.stateful_dataloader import StatefulDataLoader

from logitcache.data import CacheDataset
from logitcache.errors import ConfigError, CorruptShardError, LoaderStateError


def sample_ids(batch):
    """A collate_fn keeping only the ids, so tests compare exact sequences."""
    return [s["sample_id"] for s in batch]


def epoch_ids(uri, *, world_size=1, num_workers=0, epoch=0, batch_size=2, **options):
    """Ids yielded per rank for one epoch through a real DataLoader."""
    per_rank = []
    for rank in range(world_size):
        ds = CacheDataset(uri, rank=rank, world_size=world_size, **options)
        ds.set_epoch(epoch)
        loader = DataLoader(
            ds, batch_size=batch_size, num_workers=num_workers, collate_fn=sample_ids
        )
        per_rank.append([i for batch in loader for i in batch])
    return per_rank


@pytest.mark.parametrize("world_size,num_workers", [(1, 0), (1, 2), (3, 2), (4, 2)])
def test_every_sample_exactly_once_for_any_layout(tmp_path, build_cache, world_size, num_workers):
    uri = str(tmp_path / "c")
    expected = build_cache(uri)  # 4 shards x ~4 row groups
    per_rank = epoch_ids(uri, world_size=world_size, num_workers=num_workers)
    flat = [i for ids in per_rank for i in ids]
    assert len(flat) == len(set(flat)) == len(expected)
    assert set(flat) == set(expected)


def test_more_workers_than_row_groups_splits_row_ranges(tmp_path, build_cache):
    uri = str(tmp_path / "c")
    expected = build_cache(uri, shards=1, per_shard=9, row_group_tokens=10_000)  # 1 row group
    per_rank = epoch_ids(uri, world_size=2, num_workers=2)
    flat = [i for ids in per_rank for i in ids]
    assert sorted(flat) == sorted(expected)
    assert all(ids for ids in per_rank)  # both ranks got work


def test_decoded_samples_match_what_was_written(tmp_path, build_cache):
    uri = str(tmp_path / "c")
    expected = build_cache(uri, rs_samples=16)
    got = list(CacheDataset(uri, shuffle_buffer=8))
    assert len(got) == len(expected)
    for s in got:
        e = expected[s["sample_id"]]
        for name in ("input_ids", "loss_mask", "topk_ids", "topk_logprobs", "tail_logmass"):
            np.testing.assert_array_equal(s[name], e[name])
        u = e["rs_ids"].shape[1]
        np.testing.assert_array_equal(s["rs_ids"][:, :u], e["rs_ids"])
        np.testing.assert_array_equal(s["rs_counts"][:, :u], e["rs_counts"])


def test_order_is_deterministic_per_seed_and_epoch(tmp_path, build_cache):
    uri = str(tmp_path / "c")
    build_cache(uri)
    a = epoch_ids(uri, num_workers=2, seed=3)[0]
    assert a == epoch_ids(uri, num_workers=2, seed=3)[0]
    assert a != epoch_ids(uri, num_workers=2, seed=3, epoch=1)[0]
    assert a != epoch_ids(uri, num_workers=2, seed=4)[0]
    unshuffled = epoch_ids(uri, shuffle=False)[0]
    ds = CacheDataset(uri)
    manifest_order = [s["sample_id"] for s in ds.cache.iter_samples()]
    assert unshuffled == manifest_order


def test_drop_uneven_gives_every_rank_the_same_count(tmp_path, build_cache):
    uri = str(tmp_path / "c")
    expected = build_cache(uri, shards=3, per_shard=7)
    per_rank = epoch_ids(uri, world_size=3, num_workers=2, drop_uneven=True, batch_size=1)
    counts = {len(ids) for ids in per_rank}
    assert len(counts) == 1
    flat = [i for ids in per_rank for i in ids]
    assert len(flat) == len(set(flat)) and set(flat) <= set(expected)
    ds = CacheDataset(uri, rank=0, world_size=3, drop_uneven=True)
    assert ds.num_samples(num_workers=2) == len(per_rank[0])


@pytest.mark.parametrize("num_workers", [0, 2])
def test_resume_mid_epoch_yields_exactly_the_remaining_samples(tmp_path, build_cache, num_workers):
    uri = str(tmp_path / "c")
    build_cache(uri)

    def loader():
        ds = CacheDataset(uri, seed=7, shuffle_buffer=5)
        ds.set_epoch(2)
        return StatefulDataLoader(ds, batch_size=3, num_workers=num_workers, collate_fn=sample_ids)

    full = [b for b in loader()]
    first = loader()
    it = iter(first)
    seen = [next(it) for _ in range(5)]
    state = first.state_dict()
    del it, first
    assert seen == full[:5]

    resumed = loader()
    resumed.load_state_dict(state)
    rest = [b for b in resumed]
    assert seen + rest == full


def test_resume_refuses_a_changed_layout(tmp_path, build_cache):
    uri = str(tmp_path / "c")
    build_cache(uri)
    ds = CacheDataset(uri, rank=0, world_size=2)
    it = iter(ds)
    next(it)
    state = ds.state_dict()
    with pytest.raises(LoaderStateError, match="world_size=2"):
        CacheDataset(uri, rank=0, world_size=4).load_state_dict(state)
    with pytest.raises(LoaderStateError, match="seed"):
        CacheDataset(uri, rank=0, world_size=2, seed=1).load_state_dict(state)

    # Saved by a single-process loader, resumed with 2 DataLoader workers.
    other = CacheDataset(uri, rank=0, world_size=2)
    other.load_state_dict(state)
    loader = DataLoader(other, batch_size=2, num_workers=2, collate_fn=sample_ids)
    with pytest.raises(Exception, match="num_workers=1"):
        list(loader)

    fresh = CacheDataset(uri, rank=0, world_size=2)
    fresh.load_state_dict(state)
    assert len(list(fresh)) == fresh.num_samples() - 1


def test_reads_from_s3_with_a_bounded_local_disk_cache(s3_bucket, tmp_path, build_cache):
    uri = f"s3://{s3_bucket}/caches/loader"
    expected = build_cache(uri, shards=3)
    sizes = sorted(s.bytes for s in CacheDataset(uri).cache.shards)
    limit = sizes[-1] + sizes[-2]  # room for two of the three shards
    disk = tmp_path / "disk"
    ds = CacheDataset(uri, local_cache_dir=str(disk), local_cache_bytes=limit)
    ids = [s["sample_id"] for s in ds]
    assert sorted(ids) == sorted(expected)
    files = list(disk.glob("*.parquet"))
    assert 1 <= len(files) <= 2
    assert sum(f.stat().st_size for f in files) <= limit
    # Remote without a disk cache: ranged reads, two DataLoader workers.
    assert sorted(epoch_ids(uri, num_workers=2)[0]) == sorted(expected)


def _corrupt(path):
    data = bytearray(open(path, "rb").read())
    mid = len(data) // 3
    data[mid : mid + 64] = bytes(64)
    with open(path, "wb") as fh:
        fh.write(bytes(data))


def test_bad_shard_raises_naming_it_or_is_skipped_with_a_warning(tmp_path, build_cache, caplog):
    uri = str(tmp_path / "c")
    expected = build_cache(uri, shards=3)
    ds = CacheDataset(uri)
    bad = ds.cache.shards[1]
    _corrupt(os.path.join(uri, bad.path))
    with pytest.raises(CorruptShardError, match=bad.path.split("/")[-1]):
        list(CacheDataset(uri, shuffle=False))
    with caplog.at_level(logging.WARNING, logger="logitcache.data"):
        got = [s["sample_id"] for s in CacheDataset(uri, skip_bad_shards=True)]
    assert any(bad.path in r.getMessage() for r in caplog.records)
    good = {k for k in expected if not k.startswith("u1-")}
    assert set(got) <= set(expected) and good <= set(got)
    assert len(got) == len(set(got))

    os.remove(os.path.join(uri, bad.path))  # a missing shard is caught when opening
    with pytest.raises(CorruptShardError, match="missing"):
        CacheDataset(uri)
    assert {s["sample_id"] for s in CacheDataset(uri, skip_bad_shards=True)} == good


def test_heldout_split_is_disjoint_stable_and_covering(tmp_path, build_cache):
    uri = str(tmp_path / "c")
    expected = build_cache(uri, shards=4, per_shard=25)
    train = epoch_ids(uri, split="train", heldout_fraction=0.2, num_workers=2)[0]
    held = epoch_ids(uri, split="heldout", heldout_fraction=0.2, seed=5)[0]
    assert not set(train) & set(held)
    assert sorted(train + held) == sorted(expected)
    assert 0.08 < len(held) / len(expected) < 0.35
    again = epoch_ids(uri, split="heldout", heldout_fraction=0.2, epoch=3, world_size=2)
    assert sorted(i for ids in again for i in ids) == sorted(held)


def test_config_errors_say_how_to_fix(tmp_path, build_cache):
    uri = str(tmp_path / "c")
    build_cache(uri, shards=1)
    with pytest.raises(ConfigError, match="split must be one of"):
        CacheDataset(uri, split="test")
    with pytest.raises(ConfigError, match="unknown CacheDataset option"):
        CacheDataset(uri, shufle=True)
    with pytest.raises(ConfigError, match="rank and world_size together"):
        CacheDataset(uri, rank=1)


def test_state_saved_at_end_of_epoch_resumes_into_the_next_epoch(tmp_path, build_cache):
    uri = str(tmp_path / "c")
    expected = build_cache(uri, shards=2)
    ds = CacheDataset(uri)
    loader = StatefulDataLoader(ds, batch_size=4, collate_fn=sample_ids)
    first = [i for b in loader for i in b]
    state = loader.state_dict()

    ds2 = CacheDataset(uri)
    loader2 = StatefulDataLoader(ds2, batch_size=4, collate_fn=sample_ids)
    loader2.load_state_dict(state)  # epoch 0 finished: the next pass is a new epoch
    ds2.set_epoch(1)
    second = [i for b in loader2 for i in b]
    assert sorted(second) == sorted(first) == sorted(expected)
    fresh = CacheDataset(uri)
    fresh.set_epoch(1)
    assert second == [s["sample_id"] for s in fresh]
