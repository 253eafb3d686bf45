"""From a teacher's logits to what the cache stores, on the teacher's device.

Only ``k`` (ids, log-probs) pairs, one tail mass and a handful of distinct sampled ids per
position ever leave the device; the ``[N, V]`` log-probs are built in fp32 one chunk of
positions at a time.

Tail mass: ``tail_logmass = log(sum of p outside the top-k)`` is computed *directly*, as the
logsumexp of the log-probs with the top-k entries masked out, rather than as
``log1p(-sum(exp(topk)))``: the two agree mathematically, but the subtraction loses everything
below fp32 precision (~1e-7), while the direct form stays accurate down to tails of 1e-30 and
beyond. It is ``-inf`` only when nothing lies outside the top-k (``k == V``, or every other id
has probability 0, e.g. masked logits), and ``0`` for ``k == 0``.

Sampled draws (RS-KD): ``rs_samples`` ids per position drawn with replacement from the T=1
distribution by ``torch.multinomial`` with the row's own ``torch.Generator``, then reduced to
distinct ids (ascending) and counts by sort + run-length encoding, padded to the widest
position of the row with id 0 / count 0.
"""

from __future__ import annotations

import torch


def topk_and_tail(
    logp: torch.Tensor, top_k: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``logp`` [N, V] fp32 log-probs -> (ids [N, k] int32, log-probs [N, k], tail [N])."""
    n = logp.shape[0]
    if top_k == 0:
        empty = torch.empty((n, 0), device=logp.device)
        return empty.to(torch.int32), empty.float(), torch.zeros(n, device=logp.device)
    values, ids = torch.topk(logp, top_k, dim=-1, largest=True, sorted=True)
    rest = logp.scatter(-1, ids, float("-inf"))
    tail = torch.logsumexp(rest, dim=-1)
    return ids.to(torch.int32), values, tail


def sample_counts(
    logp: torch.Tensor, rs_samples: int, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """``rs_samples`` draws per position -> (distinct ids [N, U] int32, counts [N, U] int32)."""
    draws = torch.multinomial(logp.exp(), rs_samples, replacement=True, generator=generator)
    return run_length(draws)


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
