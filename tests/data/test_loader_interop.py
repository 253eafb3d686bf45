"""Other readers of the same shards: Ray Data (with our decode) and DuckDB (plain columns)."""

from __future__ import annotations

import numpy as np
import pytest

from logitcache.data import ray_dataset
from logitcache.format import open_cache


@pytest.mark.slow  # starts a local multi-process Ray runtime
def test_ray_dataset_reads_only_committed_shards_and_decodes(tmp_path, build_cache):
    import ray

    uri = str(tmp_path / "c")
    expected = build_cache(uri, shards=2, per_shard=5)
    (tmp_path / "c" / "shards" / "unit-999-orphan.parquet").write_bytes(b"not committed")
    ray.init(
        address="local",
        num_cpus=2,
        include_dashboard=False,
        ignore_reinit_error=True,
        log_to_driver=False,
    )
    try:
        rows = ray_dataset(uri).take_all()
    finally:
        ray.shutdown()
    assert sorted(r["sample_id"] for r in rows) == sorted(expected)
    for r in rows:
        e = expected[r["sample_id"]]
        np.testing.assert_array_equal(r["input_ids"], e["input_ids"])
        np.testing.assert_array_equal(r["topk_ids"], e["topk_ids"])
        np.testing.assert_array_equal(r["topk_logprobs"], e["topk_logprobs"])


def test_duckdb_reads_a_shards_plain_columns(tmp_path, build_cache):
    duckdb = pytest.importorskip("duckdb")
    uri = str(tmp_path / "c")
    expected = build_cache(uri, shards=1, per_shard=6)
    shard = open_cache(uri).shards[0]
    path = str(tmp_path / "c" / shard.path)
    rows = duckdb.sql(
        f"SELECT sample_id, num_tokens, input_ids FROM read_parquet('{path}') ORDER BY sample_id"
    ).fetchall()
    assert [r[0] for r in rows] == sorted(expected)
    for sid, n, ids in rows:
        assert n == len(expected[sid]["input_ids"])
        assert ids == expected[sid]["input_ids"].tolist()
