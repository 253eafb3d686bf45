"""Sparse KD losses, one value per position, as pure functions of tensors.

Every function takes the student's dense logits ``[N, V]`` (positions already selected) and
the cached targets for those positions, and returns ``[N]`` losses. Reduction, masking,
alpha mixing and Hinton's T^2 factor live in :func:`logitcache.losses.compute_loss`.

Notation: p is the teacher, q the student, both over the k+1 buckets of
:mod:`logitcache.losses.buckets` (top-k ids + tail) unless said otherwise.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from logitcache.losses.buckets import student_buckets, student_logprobs_at, teacher_buckets


def kl(logp: torch.Tensor, logq: torch.Tensor) -> torch.Tensor:
    """Row-wise KL(p || q) from log-probs; zero-probability entries of p contribute 0."""
    return (logp.exp() * (logp - logq)).sum(dim=-1)


def _has_tail(topk_ids: torch.Tensor, vocab_size: int | None, logits: torch.Tensor) -> bool:
    """The tail bucket is empty only when the top-k covers the whole vocabulary."""
    return topk_ids.shape[-1] < (vocab_size or logits.shape[-1])


def _buckets(logits, topk_ids, topk_logprobs, tail_logmass, temperature, vocab_size):
    with_tail = _has_tail(topk_ids, vocab_size, logits)
    logp = teacher_buckets(
        topk_logprobs,
        tail_logmass if with_tail else None,
        temperature=temperature,
        vocab_size=vocab_size or logits.shape[-1],
    )
    logq = student_buckets(logits, topk_ids, temperature=temperature, with_tail=with_tail)
    return logp, logq


def kl_tail(
    logits: torch.Tensor,
    topk_ids: torch.Tensor,
    topk_logprobs: torch.Tensor,
    tail_logmass: torch.Tensor,
    *,
    temperature: float = 1.0,
    vocab_size: int | None = None,
) -> torch.Tensor:
    """Forward KL(p || q) over top-k + tail: the default; a lower bound of the full KL that
    becomes exact as k -> V (merging ids into one bucket never increases a KL)."""
    logp, logq = _buckets(logits, topk_ids, topk_logprobs, tail_logmass, temperature, vocab_size)
    return kl(logp, logq)


def kl_topk(
    logits: torch.Tensor,
    topk_ids: torch.Tensor,
    topk_logprobs: torch.Tensor,
    tail_logmass: torch.Tensor | None = None,
    *,
    temperature: float = 1.0,
    vocab_size: int | None = None,
) -> torch.Tensor:
    """Forward KL with the tail dropped and both sides renormalised on the top-k ids: the
    common "top-k KD" of DistillKit and others; biased (it ignores where the student puts the
    rest of its mass), kept for comparison."""
    logp = teacher_buckets(topk_logprobs, None, temperature=temperature)
    logq = student_buckets(logits, topk_ids, temperature=temperature, with_tail=False)
    return kl(logp, logq)


def reverse_kl(
    logits: torch.Tensor,
    topk_ids: torch.Tensor,
    topk_logprobs: torch.Tensor,
    tail_logmass: torch.Tensor,
    *,
    temperature: float = 1.0,
    vocab_size: int | None = None,
) -> torch.Tensor:
    """Reverse KL(q || p) over top-k + tail (mode-seeking; MiniLLM-style)."""
    logp, logq = _buckets(logits, topk_ids, topk_logprobs, tail_logmass, temperature, vocab_size)
    return kl(logq, logp)


def jsd(
    logits: torch.Tensor,
    topk_ids: torch.Tensor,
    topk_logprobs: torch.Tensor,
    tail_logmass: torch.Tensor,
    *,
    beta: float = 0.5,
    temperature: float = 1.0,
    vocab_size: int | None = None,
) -> torch.Tensor:
    """Generalised Jensen-Shannon divergence (GKD, Agarwal et al. 2024) over top-k + tail:
    ``beta * KL(p || m) + (1 - beta) * KL(q || m)`` with ``m = beta * p + (1 - beta) * q``."""
    logp, logq = _buckets(logits, topk_ids, topk_logprobs, tail_logmass, temperature, vocab_size)
    return jsd_buckets(logp, logq, beta=beta)


def jsd_buckets(logp: torch.Tensor, logq: torch.Tensor, *, beta: float = 0.5) -> torch.Tensor:
    """The generalised JSD of :func:`jsd` from bucket log-probs (shared with the fused path)."""
    logm = torch.logsumexp(torch.stack([logp + math.log(beta), logq + math.log1p(-beta)]), dim=0)
    return beta * kl(logp, logm) + (1.0 - beta) * kl(logq, logm)


def rs_kd(logits: torch.Tensor, rs_ids: torch.Tensor, rs_weights: torch.Tensor) -> torch.Tensor:
    """Random-Sampling KD (Anshumann et al., ACL 2025): cross-entropy of the student to the
    empirical distribution of N teacher draws, ``-sum_u (count_u / N) * log q(id_u)``.

    Its expectation over draws is the full cross-entropy H(p, q), so it is an unbiased
    estimate of the full KD loss up to the teacher entropy, and its gradient equals that of
    KL(p || q) in expectation. Padding entries have weight 0.
    """
    return -(rs_weights.float() * student_logprobs_at(logits, rs_ids)).sum(dim=-1)


def cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Hard-label cross-entropy on the true next tokens, per position."""
    return F.cross_entropy(logits.float(), labels.long(), reduction="none")


# The top-k losses as functions of the two bucket distributions alone, ``(logp, logq, beta)``:
# the fused output layer (logitcache.losses.fused) computes the student's buckets itself and
# differentiates these small [N, k+1] expressions, so both paths share one definition.
BUCKET_LOSSES = {
    "kl_tail": lambda logp, logq, beta: kl(logp, logq),
    "kl_topk": lambda logp, logq, beta: kl(logp, logq),
    "reverse_kl": lambda logp, logq, beta: kl(logq, logp),
    "jsd": lambda logp, logq, beta: jsd_buckets(logp, logq, beta=beta),
}
