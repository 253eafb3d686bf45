"""Speculative acceptance: the cache's top-k + tail bounds bracket the exact dense value."""

from __future__ import annotations

import pytest
import torch

from logitcache.losses.acceptance import (
    acceptance_bounds,
    acceptance_bounds_from_buckets,
    acceptance_dense,
    expected_tokens_per_round,
)
from logitcache.losses.buckets import LOG_ZERO

V, N = 40, 64


def _case(seed: int, peak: float):
    g = torch.Generator().manual_seed(seed)
    t = torch.randn(N, V, generator=g, dtype=torch.float64) * 2
    t[torch.arange(N), torch.randint(0, V, (N,), generator=g)] += peak
    s = t + torch.randn(N, V, generator=g, dtype=torch.float64) * 1.5  # a student near p
    return torch.log_softmax(t, -1), s


def test_dense_matches_textbook_formula():
    logp, s = _case(0, 3.0)
    q = torch.softmax(s, -1)
    exact = torch.minimum(logp.exp(), q).sum(-1)
    torch.testing.assert_close(acceptance_dense(logp, s), exact.float())
    assert torch.allclose(acceptance_dense(logp, logp), torch.ones(N), atol=1e-5)  # q = p


@pytest.mark.parametrize("k", [1, 4, 16, 39])
@pytest.mark.parametrize("seed,peak", [(1, 0.0), (2, 4.0), (3, 8.0)])
def test_bounds_bracket_exact_and_tighten_with_k(k, seed, peak):
    logp, s = _case(seed, peak)
    exact = acceptance_dense(logp, s)
    top_lp, top_ids = logp.topk(k, -1)
    perm = torch.randperm(k, generator=torch.Generator().manual_seed(seed))  # any stored order
    tail = torch.log1p(-top_lp.exp().sum(-1).clamp(max=1 - 1e-12))
    lo, hi = acceptance_bounds(s, top_ids[:, perm], top_lp[:, perm].float(), tail.float())
    assert (lo <= exact + 1e-5).all() and (exact <= hi + 1e-5).all()
    # the gap never exceeds the teacher's tail mass
    assert (hi - lo <= tail.exp().float() + 1e-5).all()
    # the lower bound is the textbook top-k sum
    q = torch.softmax(s, -1)
    ref = torch.minimum(logp.exp(), q).gather(-1, top_ids).sum(-1)
    torch.testing.assert_close(lo, ref.float(), rtol=1e-5, atol=1e-6)


def test_bounds_are_exact_when_the_tail_is_one_id():
    logp, s = _case(4, 2.0)
    lp, ids = logp.topk(V - 1, -1)
    tail = torch.log1p(-lp.exp().sum(-1).clamp(max=1 - 1e-12))
    lo, hi = acceptance_bounds(s, ids, lp.float(), tail.float())
    torch.testing.assert_close(hi, acceptance_dense(logp, s), rtol=1e-4, atol=1e-5)
    assert (lo <= hi).all()


def test_padded_topk_entries_hold_no_teacher_mass():
    """A padded entry (LOG_ZERO) adds nothing to the lower bound; the upper stays valid."""
    logp, s = _case(5, 3.0)
    exact = acceptance_dense(logp, s)
    lp, ids = logp.topk(4, -1)
    tail = torch.log1p(-lp.exp().sum(-1)).float()
    pad_ids = torch.cat([ids, torch.zeros(N, 2, dtype=ids.dtype)], -1)  # padding points at id 0
    pad_lp = torch.cat([lp.float(), torch.full((N, 2), LOG_ZERO)], -1)
    lo, hi = acceptance_bounds(s, pad_ids, pad_lp, tail)
    lo4, _ = acceptance_bounds(s, ids, lp.float(), tail)
    torch.testing.assert_close(lo, lo4)
    assert (exact <= hi + 1e-5).all() and (lo <= exact + 1e-5).all()


def test_from_buckets_identical_distributions():
    b = torch.log_softmax(torch.randn(3, 5), -1)
    lo, hi = acceptance_bounds_from_buckets(b, b)
    torch.testing.assert_close(hi, torch.ones(3))
    torch.testing.assert_close(lo, 1 - b[:, -1].exp())


def test_expected_tokens_per_round():
    assert expected_tokens_per_round(0.0, 4) == 1.0  # only the teacher's own token
    assert expected_tokens_per_round(1.0, 4) == 5.0
    assert expected_tokens_per_round(0.5, 4) == pytest.approx(1 + 0.5 + 0.25 + 0.125 + 0.0625)
    t = expected_tokens_per_round(torch.tensor([0.0, 0.5, 1.0]), 4)
    torch.testing.assert_close(t, torch.tensor([1.0, 1.9375, 5.0]))
    with pytest.raises(ValueError, match="gamma"):
        expected_tokens_per_round(0.5, 0)
