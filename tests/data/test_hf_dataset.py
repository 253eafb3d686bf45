"""logitcache.to_hf_dataset: the decoded payload as a datasets.IterableDataset."""

from __future__ import annotations

import numpy as np
import pytest

import logitcache
from logitcache.data import split_mask


@pytest.mark.parametrize("codec_spec", ["raw", "lc1:step=0.0,knee=-5.0,ratio=8.0,ranks=id"])
def test_columns_are_the_decoded_payload(build_cache, tmp_path, codec_spec):
    import datasets

    uri = str(tmp_path / "c")
    expected = build_cache(uri, shards=2, per_shard=5, top_k=4, rs_samples=6, codec_spec=codec_spec)
    ds = logitcache.to_hf_dataset(uri)
    assert isinstance(ds, datasets.IterableDataset)
    assert set(ds.features) == {
        "sample_id", "input_ids", "loss_mask", "topk_ids", "topk_logprobs", "tail_logmass",
        "rs_ids", "rs_counts",
    }  # fmt: skip
    rows = list(ds)
    assert sorted(r["sample_id"] for r in rows) == sorted(expected)
    for r in rows:
        want = expected[r["sample_id"]]
        assert r["input_ids"] == want["input_ids"].tolist()
        assert r["loss_mask"] == want["loss_mask"].tolist()
        assert r["topk_ids"] == want["topk_ids"].tolist()
        np.testing.assert_array_equal(
            np.array(r["topk_logprobs"], np.float32), want["topk_logprobs"]
        )
        np.testing.assert_array_equal(np.array(r["tail_logmass"], np.float32), want["tail_logmass"])
        counts = np.array(r["rs_counts"])
        assert (counts.sum(axis=1) == 6).all()  # every position's draws: N in all


def test_split_and_torch_loader(build_cache, tmp_path):
    import torch

    uri = str(tmp_path / "c")
    expected = build_cache(uri, shards=3, per_shard=8, top_k=2)
    ids = sorted(expected)
    held = {i for i, k in zip(ids, split_mask(ids, "heldout", 0.3)) if k}
    got = [
        r["sample_id"] for r in logitcache.to_hf_dataset(uri, split="heldout", heldout_fraction=0.3)
    ]
    assert set(got) == held and held
    # shards are the sharding key: two DataLoader workers read disjoint shards
    ds = logitcache.to_hf_dataset(uri).select_columns(["sample_id"])
    loader = torch.utils.data.DataLoader(ds, batch_size=None, num_workers=2)
    assert sorted(r["sample_id"] for r in loader) == ids
