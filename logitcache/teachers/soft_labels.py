"""Logits -> what the cache stores (top-k, tail mass, sampled draws), fused, on the device.

Only ``k`` (id, log-prob) pairs, one tail mass and a handful of distinct sampled ids per
position leave the device holding the output layer. :func:`soft_labels` works *in place* on the
one fp32 ``[n, V]`` logits buffer the head produced; no ``[n, V]`` log-softmax, mask copy or
``exp`` temporary is ever allocated (the unfused :func:`reference_soft_labels` makes three).
Per chunk of positions:

1. ``topk(logits, k + 1)``: the top-k, plus the largest logit outside them (``m_rest``).
2. The top-k entries are set to ``-inf``; ``exp_(logits - m_rest)`` in place; one ``sum`` gives
   the mass outside the top-k relative to its own maximum, so the tail is exact to fp32
   *relative* precision however small it is (1e-30 and beyond), as with a direct logsumexp.
3. ``log Z = logaddexp(m_rest + log(rest), logsumexp(top-k))`` on ``[n, k]`` values;
   ``topk_logprobs = topk - log Z``, ``tail_logmass = log(rest) + m_rest - log Z``.

Computing the tail as ``log1p(-sum(exp(topk)))`` instead would agree mathematically but lose
everything below fp32 resolution (~1e-7). The tail is ``-inf`` only when nothing lies outside
the top-k (``k == V``, or every other logit is ``-inf``), and ``0`` for ``k == 0``.

Sampled draws (RS-KD): the buffer then holds exp(logit - m_rest) outside the top-k; it is
rescaled to exp(logit - max) with the top-k restored, and ``torch.multinomial`` (which
normalises its weights) draws ``rs_samples`` ids per position with replacement using the row's
own ``torch.Generator``. Draws are reduced to distinct ids (ascending) and counts by sort and
run-length encoding, padded to the widest position with id 0 / count 0.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class SoftLabels:
    """One chunk's soft labels, still on the device: ids/logprobs ``[n, k]``, tail ``[n]``,
    and with draws, distinct ids/counts ``[n, U]`` (else None)."""

    topk_ids: torch.Tensor
    topk_logprobs: torch.Tensor
    tail_logmass: torch.Tensor
    rs_ids: torch.Tensor | None = None
    rs_counts: torch.Tensor | None = None


def soft_labels(
    logits: torch.Tensor,
    top_k: int,
    *,
    rs_samples: int = 0,
    generator: torch.Generator | None = None,
) -> SoftLabels:
    """Logits ``[n, V]`` -> :class:`SoftLabels` at T=1, fused (see the module docstring).

    Consumes ``logits``: an fp32 tensor is overwritten in place (pass a clone to keep it); any
    other dtype is first cast to one fp32 working copy."""
    x = logits if logits.dtype == torch.float32 else logits.float()
    n, vocab = x.shape
    k = min(top_k, vocab)
    if k == 0:
        empty = torch.empty((n, 0), device=x.device)
        ids, logprobs, tail = empty.to(torch.int32), empty, torch.zeros(n, device=x.device)
        if not rs_samples:
            return SoftLabels(ids, logprobs, tail)
        x.sub_(x.amax(-1, keepdim=True)).exp_()
        return SoftLabels(ids, logprobs, tail, *_draws(x, rs_samples, generator))

    values, top = torch.topk(x, min(k + 1, vocab), dim=-1, largest=True, sorted=True)
    top_vals, top_ids = values[:, :k], top[:, :k]
    top_lse = torch.logsumexp(top_vals, -1)
    if k == vocab:
        tail = torch.full((n,), float("-inf"), device=x.device)
        logprobs = top_vals - top_lse[:, None]
        if rs_samples:
            x.sub_(values[:, :1]).exp_()
            return SoftLabels(top_ids.int(), logprobs, tail, *_draws(x, rs_samples, generator))
        return SoftLabels(top_ids.int(), logprobs, tail)
    m_rest = values[:, k]
    # A row with nothing finite outside the top-k shifts by 0 (avoids -inf - -inf = nan).
    shift = torch.where(torch.isfinite(m_rest), m_rest, torch.zeros_like(m_rest))
    x.scatter_(-1, top_ids, float("-inf"))
    x.sub_(shift[:, None]).exp_()  # exp(logit - m_rest) outside the top-k, 0 inside
    rest_lse = x.sum(-1).log_() + shift
    lse = torch.logaddexp(rest_lse, top_lse)
    logprobs = top_vals - lse[:, None]
    tail = rest_lse - lse
    if not rs_samples:
        return SoftLabels(top_ids.int(), logprobs, tail)
    # Weights exp(logit - max): rescale the rest (<= 1, may underflow exactly where the old
    # exp(log_softmax) did) and put the top-k back.
    x.mul_(torch.exp(shift - values[:, 0])[:, None])
    x.scatter_(-1, top_ids, torch.exp(top_vals - values[:, :1]))
    return SoftLabels(top_ids.int(), logprobs, tail, *_draws(x, rs_samples, generator))


def _draws(weights, rs_samples, generator) -> tuple[torch.Tensor, torch.Tensor]:
    draws = torch.multinomial(weights, rs_samples, replacement=True, generator=generator)
    return run_length(draws)


def reference_soft_labels(
    logits: torch.Tensor,
    top_k: int,
    *,
    rs_samples: int = 0,
    generator: torch.Generator | None = None,
) -> SoftLabels:
    """The plain, unfused definition: fp32 log-softmax, top-k on it, tail as the logsumexp of
    the log-probs with the top-k masked out, draws from ``exp(log-probs)``. Allocates three
    ``[n, V]`` tensors; kept as what :func:`soft_labels` is tested and benchmarked against."""
    logp = torch.log_softmax(logits.float(), dim=-1)
    n = logp.shape[0]
    if top_k == 0:
        empty = torch.empty((n, 0), device=logp.device)
        ids, vals, tail = empty.to(torch.int32), empty, torch.zeros(n, device=logp.device)
    else:
        vals, top = torch.topk(logp, top_k, dim=-1, largest=True, sorted=True)
        tail = torch.logsumexp(logp.scatter(-1, top, float("-inf")), dim=-1)
        ids = top.to(torch.int32)
    if not rs_samples:
        return SoftLabels(ids, vals, tail)
    draws = torch.multinomial(logp.exp(), rs_samples, replacement=True, generator=generator)
    return SoftLabels(ids, vals, tail, *run_length(draws))


def run_length(draws: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Draws [N, S] -> distinct ids ascending [N, U] and their counts, padded with 0/0."""
    n = draws.shape[0]
    if n == 0:
        empty = torch.zeros((0, 0), dtype=torch.int32, device=draws.device)
        return empty, empty.clone()
    s, _ = torch.sort(draws, dim=-1)
    new = torch.ones_like(s, dtype=torch.bool)
    new[:, 1:] = s[:, 1:] != s[:, :-1]
    slot = torch.cumsum(new, dim=-1) - 1  # index of each draw's distinct id within its row
    width = int(slot[:, -1].max()) + 1
    ids = torch.zeros((n, width), dtype=s.dtype, device=s.device).scatter_(-1, slot, s)
    counts = torch.zeros((n, width), dtype=torch.int32, device=s.device)
    counts.scatter_add_(-1, slot, torch.ones_like(slot, dtype=torch.int32))
    return ids.to(torch.int32), counts


def pad_width(parts: list[torch.Tensor], width: int) -> list[torch.Tensor]:
    """Right-pad [n_i, u_i] pieces with zeros to a common width."""
    return [torch.nn.functional.pad(p, (0, width - p.shape[1])) for p in parts]
