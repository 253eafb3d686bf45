"""Teacher and student distributions over the k+1 buckets a cache can describe.

A cache stores, per position, the teacher's top-k log-probs and the log of the mass outside
them (the tail). Both sides of a sparse KD loss are therefore distributions over k+1 buckets:
the k teacher ids, and "everything else". The student's buckets come from its dense logits by
a gather at the teacher's ids and a log-sum-exp over the remaining ids, so no dense teacher
tensor is ever built; the only [N, V] tensors are the student's own logits and one masked
copy of them (for the tail).

Temperature. Stored log-probs are at T=1. The tempered teacher on the top-k is exact up to
normalisation (``exp(logp / T)``), but the tail's mass at temperature T is not recoverable: it
depends on how the tail mass is spread over the other V-k ids. We assume it is spread
uniformly, so the tempered tail mass is ``(V-k) * (tail / (V-k)) ** (1/T)``, and renormalise
over the k+1 buckets. For T > 1 this underestimates the tempered tail when the true tail is
concentrated on a few ids (a concentrated tail flattens less than a uniform one inflates);
with a well-chosen k the tail holds little mass and the error is small.
"""

from __future__ import annotations

import math

import torch

# Finite stand-in for log(0): exp() of it is exactly 0 in float32, and 0 * (finite) stays 0, so
# masked or empty buckets never produce 0 * inf = NaN in losses or their gradients.
LOG_ZERO = -1.0e4


def teacher_buckets(
    topk_logprobs: torch.Tensor,
    tail_logmass: torch.Tensor | None,
    *,
    temperature: float = 1.0,
    vocab_size: int | None = None,
) -> torch.Tensor:
    """Teacher log-probs over ``[top-k..., tail]`` (``[N, k+1]``), tempered and renormalised.

    ``tail_logmass=None`` gives the renormalised top-k distribution (``[N, k]``, tail dropped).
    ``vocab_size`` (the teacher's V) is needed only to temper the tail bucket.
    """
    lp = topk_logprobs.float().clamp(min=LOG_ZERO) / temperature
    if tail_logmass is None:
        return lp - torch.logsumexp(lp, dim=-1, keepdim=True)
    tail = tail_logmass.float().clamp(min=LOG_ZERO)
    if temperature != 1.0:
        k = topk_logprobs.shape[-1]
        if vocab_size is None or vocab_size <= k:
            raise ValueError(
                f"tempering the tail bucket needs the teacher vocab_size > k={k}, got "
                f"{vocab_size}; pass manifest.vocab_size"
            )
        log_n = math.log(vocab_size - k)
        tail = log_n + (tail - log_n) / temperature
    buckets = torch.cat([lp, tail.unsqueeze(-1)], dim=-1)
    return buckets - torch.logsumexp(buckets, dim=-1, keepdim=True)


def student_buckets(
    logits: torch.Tensor,
    topk_ids: torch.Tensor,
    *,
    temperature: float = 1.0,
    with_tail: bool = True,
) -> torch.Tensor:
    """Student log-probs at the teacher's ids plus its tail bucket (``[N, k+1]``).

    The tail is ``logsumexp`` over the logits with the top-k ids masked out, minus the full
    ``logsumexp``: exact and stable even when the student puts almost all its mass on the
    top-k (``log(1 - sum(p))`` would round to ``log(0)`` there). ``with_tail=False`` gives
    the student renormalised over the top-k ids (``[N, k]``).
    """
    z = logits.float()
    if temperature != 1.0:
        z = z / temperature
    ids = topk_ids.long()
    picked = z.gather(-1, ids)
    if not with_tail:
        return picked - torch.logsumexp(picked, dim=-1, keepdim=True)
    lse = torch.logsumexp(z, dim=-1, keepdim=True)
    rest = torch.logsumexp(z.scatter(-1, ids, float("-inf")), dim=-1, keepdim=True)
    return torch.cat([picked - lse, rest - lse], dim=-1)


def student_logprobs_at(logits: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """``log_softmax(logits)`` gathered at ``ids`` without materialising the full log-softmax."""
    z = logits.float()
    return z.gather(-1, ids.long()) - torch.logsumexp(z, dim=-1, keepdim=True)
