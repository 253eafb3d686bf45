"""Speculative-decoding acceptance: how often a student's draft tokens would be accepted.

In speculative sampling (Leviathan et al. 2023; Chen et al. 2023) a token drafted from the
student q is accepted with probability ``min(1, p/q)`` under the teacher p, so the expected
acceptance per drafted token is ``alpha = sum_v min(p_v, q_v) = 1 - TV(p, q)``. With ``gamma``
drafts per round and acceptances treated as independent, a round yields
``(1 - alpha^(gamma+1)) / (1 - alpha)`` tokens on average (the accepted drafts plus the
teacher's own next token).

With the dense teacher alpha is exact (:func:`acceptance_dense`). A cache keeps only the
teacher's top-k and the tail mass, so alpha is bounded (:func:`acceptance_bounds`) over the
k+1 buckets of :mod:`logitcache.losses.buckets`:

* lower = ``sum_{i in top-k} min(p_i, q_i)`` (the ids outside the top-k contribute >= 0);
* upper = lower + ``min(p_tail, q_out)``, ``q_out`` = the student's mass outside the teacher's
  top-k (``sum_{v not in K} min(p_v, q_v) <= min(sum p_v, sum q_v)``).

The gap is at most the tail mass, so it shrinks as k grows. All functions are per position
(``[N]`` out) and never build a dense teacher tensor.
"""

from __future__ import annotations

import torch

from logitcache.losses.buckets import LOG_ZERO, student_buckets, teacher_buckets


def acceptance_dense(teacher_logprobs: torch.Tensor, student_logits: torch.Tensor) -> torch.Tensor:
    """Exact ``sum_v min(p_v, q_v)`` per position from dense ``[N, V]`` teacher log-probs and
    student logits (the student may be wider: its extra ids have p = 0)."""
    logq = torch.log_softmax(student_logits.float(), dim=-1)
    width = min(teacher_logprobs.shape[-1], logq.shape[-1])
    p = teacher_logprobs[..., :width].float().exp()
    return torch.minimum(p, logq[..., :width].exp()).sum(dim=-1)


def acceptance_bounds_from_buckets(
    teacher_logp: torch.Tensor, student_logq: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """(lower, upper) bounds of alpha from bucket log-probs ``[N, k+1]`` (top-k..., tail).

    Padded top-k entries (teacher log-prob at ``LOG_ZERO`` or below) hold no teacher mass; the
    student mass gathered there is moved to its outside-the-top-k bucket, which can only widen
    the upper bound, never break it.
    """
    p, q = teacher_logp.float().exp(), student_logq.float().exp()
    p_top, q_top = p[..., :-1], q[..., :-1]
    valid = teacher_logp[..., :-1] > LOG_ZERO / 2
    lower = torch.where(valid, torch.minimum(p_top, q_top), 0.0).sum(dim=-1)
    q_out = q[..., -1] + torch.where(valid, 0.0, q_top).sum(dim=-1)
    upper = lower + torch.minimum(p[..., -1], q_out.clamp(max=1.0))
    return lower, upper.clamp(max=1.0)


def acceptance_bounds(
    student_logits: torch.Tensor,
    topk_ids: torch.Tensor,
    topk_logprobs: torch.Tensor,
    tail_logmass: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(lower, upper) bounds of alpha per position from a cache's top-k + tail at T = 1."""
    logp = teacher_buckets(topk_logprobs, tail_logmass)
    logq = student_buckets(student_logits, topk_ids)
    return acceptance_bounds_from_buckets(logp, logq)


def expected_tokens_per_round(alpha, gamma: int = 4):
    """Mean tokens per draft-and-verify round, ``(1 - alpha^(gamma+1)) / (1 - alpha)``
    (``gamma + 1`` when alpha = 1); floats or tensors."""
    if gamma < 1:
        raise ValueError(f"gamma (drafted tokens per round) must be >= 1, got {gamma}")
    if isinstance(alpha, torch.Tensor):
        safe = torch.where(alpha < 1, alpha, 0.0)
        return torch.where(alpha < 1, (1 - safe ** (gamma + 1)) / (1 - safe), float(gamma + 1))
    if alpha >= 1:
        return float(gamma + 1)
    return (1 - alpha ** (gamma + 1)) / (1 - alpha)
