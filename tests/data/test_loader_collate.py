"""collate(): shapes, dtypes, label alignment and safe padding; make_dataloader resumes."""

from __future__ import annotations

import math

import numpy as np
import torch

from logitcache.data import IGNORE_INDEX, CacheDataset, collate, make_dataloader


def test_collate_shapes_dtypes_and_next_token_labels(tmp_path, build_cache):
    uri = str(tmp_path / "c")
    build_cache(uri, shards=1, rs_samples=12)
    samples = list(CacheDataset(uri, shuffle=False))[:3]
    batch = collate(samples, pad_id=0, rs_samples=12)
    b, t = 3, max(len(s["input_ids"]) for s in samples)
    k = samples[0]["topk_ids"].shape[1]
    assert batch["input_ids"].shape == (b, t) and batch["input_ids"].dtype == torch.int64
    assert batch["attention_mask"].dtype == torch.bool
    assert batch["labels"].dtype == torch.int64
    assert batch["topk_ids"].shape == (b, t, k) and batch["topk_ids"].dtype == torch.int64
    assert batch["topk_logprobs"].dtype == torch.float32
    assert batch["tail_logmass"].shape == (b, t)
    assert batch["rs_ids"].dtype == torch.int64 and batch["rs_weights"].dtype == torch.float32
    for i, s in enumerate(samples):
        n = len(s["input_ids"])
        ids = s["input_ids"]
        assert batch["attention_mask"][i].sum() == n
        for pos in range(t):
            want = ids[pos + 1] if pos < n - 1 and s["loss_mask"][pos] else IGNORE_INDEX
            assert batch["labels"][i, pos] == want
        np.testing.assert_array_equal(batch["topk_ids"][i, :n].numpy(), s["topk_ids"])
        np.testing.assert_array_equal(batch["topk_logprobs"][i, :n].numpy(), s["topk_logprobs"])
        # Draw weights sum to 1 on real positions, 0 on padding.
        w = batch["rs_weights"][i].sum(-1)
        torch.testing.assert_close(w[:n], torch.ones(n))
        assert torch.all(w[n:] == 0)
    # Padding is finite: a uniform top-k with (numerically) zero tail mass.
    pad = ~batch["attention_mask"]
    assert pad.any()
    assert (
        torch.isfinite(batch["topk_logprobs"]).all() and torch.isfinite(batch["tail_logmass"]).all()
    )
    pad_mass = batch["topk_logprobs"][pad].exp().sum(-1) + batch["tail_logmass"][pad].exp()
    torch.testing.assert_close(pad_mass, torch.ones_like(pad_mass))
    assert torch.allclose(batch["topk_logprobs"][pad], torch.tensor(-math.log(k)))


def test_make_dataloader_batches_and_resumes_exactly(tmp_path, build_cache):
    uri = str(tmp_path / "c")
    build_cache(uri, shards=2)

    def loader():
        return make_dataloader(CacheDataset(uri, seed=1), batch_size=4, num_workers=2)

    full = [b["input_ids"] for b in loader()]
    first = loader()
    it = iter(first)
    head = [next(it)["input_ids"] for _ in range(2)]
    state = first.state_dict()
    resumed = loader()
    resumed.load_state_dict(state)
    rest = [b["input_ids"] for b in resumed]
    assert len(head) + len(rest) == len(full)
    for got, want in zip(head + rest, full):
        assert torch.equal(got, want)
