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


@pytest.mark.parametrize("chunk", [5, 64])
def test_fused_and_dense_objective_report_the_same_bounds(chunk):
    """Evaluation without [N, V] logits (the fused path, chunk by chunk, masked positions)
    gives the bounds that acceptance_bounds computes from the dense logits."""
    from logitcache.losses.fused import fused_position_metrics

    g = torch.Generator().manual_seed(7)
    b, t, d, k = 2, 9, 6, 5
    hidden = torch.randn(b, t, d, generator=g)
    weight = torch.randn(V, d, generator=g)
    logp = torch.log_softmax(torch.randn(b, t, V, generator=g) * 2, -1)
    lp, ids = logp.topk(k, -1)
    tail = torch.log1p(-lp.exp().sum(-1))
    labels = torch.randint(0, V, (b, t), generator=g)
    labels[0, :3] = -100
    batch = {"labels": labels, "topk_ids": ids, "topk_logprobs": lp, "tail_logmass": tail}
    rows = fused_position_metrics(hidden, weight, batch, vocab_size=V, chunk_size=chunk, alpha=True)
    mask = labels != -100
    z = hidden[mask] @ weight.t()
    lo, hi = acceptance_bounds(z, ids[mask], lp[mask], tail[mask])
    torch.testing.assert_close(rows["alpha_lower"], lo, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(rows["alpha_upper"], hi, rtol=1e-5, atol=1e-6)
    exact = acceptance_dense(logp[mask], z)
    assert (rows["alpha_lower"] <= exact + 1e-5).all() and (
        exact <= rows["alpha_upper"] + 1e-5
    ).all()


def test_objective_dense_and_fused_bounds_agree():
    from transformers import LlamaConfig, LlamaForCausalLM

    from logitcache.losses import LossConfig
    from logitcache.train.objective import StudentObjective

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=V, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                      num_attention_heads=2, num_key_value_heads=1, tie_word_embeddings=True)  # fmt: skip
    model = LlamaForCausalLM(cfg).eval()
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(0, V, (2, 7), generator=g)
    lp, top = torch.log_softmax(torch.randn(2, 7, V, generator=g) * 2, -1).topk(6, -1)
    batch = {
        "input_ids": ids, "attention_mask": torch.ones_like(ids, dtype=torch.bool),
        "labels": ids.roll(-1, 1), "topk_ids": top, "topk_logprobs": lp,
        "tail_logmass": torch.log1p(-lp.exp().sum(-1)),
    }  # fmt: skip
    rows = {
        impl: StudentObjective(model, LossConfig(impl=impl), vocab_size=V).position_metrics(
            batch, "kl_tail", alpha=True
        )
        for impl in ("dense", "fused")
    }
    for key in ("alpha_lower", "alpha_upper"):
        torch.testing.assert_close(rows["dense"][key], rows["fused"][key], rtol=1e-4, atol=1e-5)
