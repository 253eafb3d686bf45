"""On-device reductions: run-length encoding of draws and the exact tail mass."""

from __future__ import annotations

import numpy as np
import torch

from logitcache.teachers.summarise import run_length, topk_and_tail


def test_run_length_of_known_draws():
    draws = torch.tensor([[5, 1, 5, 5, 9], [2, 2, 2, 2, 2]])
    ids, counts = run_length(draws)
    np.testing.assert_array_equal(ids.numpy(), [[1, 5, 9], [2, 0, 0]])
    np.testing.assert_array_equal(counts.numpy(), [[1, 3, 1], [5, 0, 0]])
    assert ids.dtype == counts.dtype == torch.int32


def test_tail_is_accurate_below_fp32_resolution():
    """A tail of ~1e-12 is invisible to log1p(-sum(exp(topk))) in fp32 but kept exactly."""
    logits = torch.tensor([[30.0, 0.0, 0.0, 2.0]], dtype=torch.float64)
    logp64 = torch.log_softmax(logits, -1)
    ids, vals, tail = topk_and_tail(logp64.float(), 2)
    ref = torch.logsumexp(logp64[0, [1, 2]], 0).item()
    assert ids.tolist() == [[0, 3]]
    assert abs(tail.item() - ref) < 1e-4 and ref < -27
    naive = torch.log1p(-torch.exp(vals).sum()).item()  # fp32 subtraction loses it entirely
    assert not np.isfinite(naive)


def test_zero_k_and_full_k():
    logp = torch.log_softmax(torch.randn(3, 6), -1)
    ids, vals, tail = topk_and_tail(logp, 0)
    assert ids.shape == (3, 0) and torch.all(tail == 0)
    _, _, tail = topk_and_tail(logp, 6)
    assert torch.all(torch.isneginf(tail))
