"""The fused in-place post-processing against the plain definition (log-softmax, top-k,
masked logsumexp, draws from exp(log-probs)), and run-length encoding of draws."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from logitcache.teachers.soft_labels import reference_soft_labels, run_length, soft_labels


def _logits(n, vocab, seed=0, scale=3.0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, vocab, generator=gen) * scale
    x[:, vocab // 2] += 6.0  # a peaked distribution, like a trained LM's
    return x


def _close(got, ref, logits=None, atol=2e-5):
    """Equal ids, except that the order among exactly tied logits (bf16) is not defined."""
    if logits is None:
        np.testing.assert_array_equal(got.topk_ids.numpy(), ref.topk_ids.numpy())
    else:
        lg = logits.float()
        a = torch.gather(lg, 1, got.topk_ids.long())
        b = torch.gather(lg, 1, ref.topk_ids.long())
        assert torch.equal(a, b)  # the same logit values in the same order
        strict = lg > b[:, -1:]  # the ids above the k-th value are the same set
        assert torch.equal(
            torch.zeros_like(strict).scatter_(1, got.topk_ids.long(), True) & strict, strict
        )
    assert got.topk_ids.dtype == torch.int32 and got.topk_logprobs.dtype == torch.float32
    np.testing.assert_allclose(got.topk_logprobs.numpy(), ref.topk_logprobs.numpy(), atol=atol)
    np.testing.assert_allclose(got.tail_logmass.numpy(), ref.tail_logmass.numpy(), atol=atol)


@pytest.mark.parametrize("k", [1, 5, 64, 999, 1000])
def test_fused_matches_the_plain_computation(k):
    x = _logits(33, 1000)
    ref = reference_soft_labels(x, k)
    _close(soft_labels(x.clone(), k), ref)


def test_bf16_logits_and_inputs_left_alone_when_cast():
    x = _logits(9, 300).bfloat16()
    before = x.clone()
    _close(soft_labels(x, 16), reference_soft_labels(x, 16), logits=x)
    assert torch.equal(x, before)  # a non-fp32 input is cast to a working copy, not touched


def test_fp32_logits_are_consumed_in_place():
    """The point of the fusion: the head's own buffer is the working memory."""
    x = _logits(4, 200)
    keep = x.clone()
    soft_labels(x, 8)
    assert not torch.equal(x, keep)


def test_tail_is_accurate_below_fp32_resolution():
    """Tails of ~1e-12 and ~1e-35 are invisible to log1p(-sum(exp(topk))) in fp32 but exact
    here, because the mass outside the top-k is summed relative to its own maximum."""
    for big, expect in [(30.0, -27.0), (82.0, -79.0)]:
        logits = torch.tensor([[big, 0.0, 0.0, 2.0]], dtype=torch.float64)
        logp64 = torch.log_softmax(logits, -1)
        got = soft_labels(logits.float(), 2)
        ref = torch.logsumexp(logp64[0, [1, 2]], 0).item()
        assert got.topk_ids.tolist() == [[0, 3]]
        assert abs(got.tail_logmass.item() - ref) < 1e-4 and ref < expect
        naive = torch.log1p(-torch.exp(got.topk_logprobs).sum()).item()
        assert not np.isfinite(naive)


def test_masked_logits_zero_k_and_full_k():
    x = _logits(3, 6)
    got = soft_labels(x.clone(), 0)
    assert got.topk_ids.shape == (3, 0) and torch.all(got.tail_logmass == 0)
    assert torch.all(torch.isneginf(soft_labels(x.clone(), 6).tail_logmass))
    # Padded vocab entries at -inf: nothing finite outside the top-4 -> tail -inf, no nan.
    x[:, 4:] = float("-inf")
    x[:, :4] = torch.tensor([3.0, 1.0, 2.0, 0.0])
    got = soft_labels(x.clone(), 4)
    assert torch.all(torch.isneginf(got.tail_logmass))
    np.testing.assert_allclose(
        got.topk_logprobs.numpy(), reference_soft_labels(x, 4).topk_logprobs.numpy(), atol=1e-6
    )
    got = soft_labels(x.clone(), 2)
    _close(got, reference_soft_labels(x, 2))


@pytest.mark.parametrize("k", [0, 4, 50])
def test_draws_follow_the_plain_computation(k):
    """Same generator seed -> nearly the same draws as multinomial(exp(log_softmax)).

    Not all: torch's CPU multinomial builds its CDF in fp32, so weights that differ by one
    rounding (exp(logit - max) here, exp(log-prob) there) move boundaries past some uniforms
    (measured: ~4% of draws at V=49k). Both are exact samples of the same distribution."""
    x = _logits(64, 500, seed=3, scale=1.0)
    s = 40
    got = soft_labels(x.clone(), k, rs_samples=s, generator=torch.Generator().manual_seed(11))
    ref = reference_soft_labels(x, k, rs_samples=s, generator=torch.Generator().manual_seed(11))
    assert torch.all(got.rs_counts.sum(-1) == s)
    agree = 0
    for a, c, b, d in zip(got.rs_ids, got.rs_counts, ref.rs_ids, ref.rs_counts):
        mine = dict(zip(a[c > 0].tolist(), c[c > 0].tolist()))
        theirs = dict(zip(b[d > 0].tolist(), d[d > 0].tolist()))
        agree += sum(min(n, theirs.get(i, 0)) for i, n in mine.items())
    assert agree >= 0.95 * 64 * s, f"only {agree} of {64 * s} draws agree"
    if k:
        _close(got, ref)


def test_draws_cover_the_distribution():
    """Frequencies of many draws match the softmax (chi-square-free check: max abs error)."""
    x = torch.tensor([[2.0, 1.0, 0.0, -1.0, -30.0]])
    got = soft_labels(x.clone(), 1, rs_samples=20000, generator=torch.Generator().manual_seed(0))
    freq = np.zeros(5)
    freq[got.rs_ids[0].numpy()] = got.rs_counts[0].numpy()
    np.testing.assert_allclose(freq / 20000, torch.softmax(x, -1)[0].numpy(), atol=0.01)


def test_run_length_of_known_draws():
    draws = torch.tensor([[5, 1, 5, 5, 9], [2, 2, 2, 2, 2]])
    ids, counts = run_length(draws)
    np.testing.assert_array_equal(ids.numpy(), [[1, 5, 9], [2, 0, 0]])
    np.testing.assert_array_equal(counts.numpy(), [[1, 3, 1], [5, 0, 0]])
    assert ids.dtype == counts.dtype == torch.int32
