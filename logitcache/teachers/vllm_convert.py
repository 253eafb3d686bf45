"""vLLM log-prob output -> cache payload (pure Python/numpy; vLLM itself is not needed).

What vLLM returns for a prompt of T token ids with ``SamplingParams(prompt_logprobs=k,
logprobs=k, max_tokens=1)`` and ``LLM(logprobs_mode="raw_logprobs")``:

* ``prompt_logprobs``: T positions; position 0 is ``None`` (nothing predicts the first token);
  position j >= 1 is the distribution of token j given tokens < j. Each position maps
  ``token_id -> Logprob(logprob, rank)`` with the top-k (ranks 1..k) plus the actual prompt
  token at its true rank, so it holds k entries when that token is in the top-k, else k+1.
* With ``flat_logprobs=True`` the same data comes as one ``FlatLogprobs`` object: parallel lists
  ``token_ids``/``logprobs``/``ranks`` and per-position ``start_indices``/``end_indices``; each
  position then lists the actual token first and then ranks 1..k, *without* de-duplication
  (always k+1 entries; the first position is empty).
* ``outputs[0].logprobs[0]``: the distribution after the last prompt token (the generated
  token's position), shaped like one prompt position.

Our row t holds the distribution for token t+1, i.e. vLLM's prompt position t+1 for
t < T-1, and the generated token's log-probs for the last row t = T-1. The conversion keeps the
entries with rank 1..k (sorted by rank), so the extra prompt token is dropped wherever it sits.
vLLM reports no tail, so ``tail_logmass = log1p(-sum(exp(topk)))`` in float64, with the top-k
mass capped at ``1 - 1e-12`` (fp32 log-probs cannot resolve smaller tails anyway).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from logitcache.errors import TeacherError

MAX_TOPK_MASS = 1.0 - 1e-12


def tail_from_topk(topk_logprobs: np.ndarray) -> np.ndarray:
    """log of the probability mass outside the top-k, [T]."""
    mass = np.exp(topk_logprobs.astype(np.float64)).sum(axis=-1)
    return np.log1p(-np.minimum(mass, MAX_TOPK_MASS)).astype(np.float32)


def _select(
    token_ids: Sequence[int], logprobs: Sequence[float], ranks: Sequence[int | None], k: int, where
) -> tuple[np.ndarray, np.ndarray]:
    """The ranks 1..k of one position, ordered by rank."""
    by_rank: dict[int, tuple[int, float]] = {}
    for tid, lp, rank in zip(token_ids, logprobs, ranks):
        if rank is not None and 1 <= rank <= k:
            by_rank[int(rank)] = (int(tid), float(lp))
    if len(by_rank) != k:
        raise TeacherError(
            f"vLLM returned {len(by_rank)} of the top-{k} ranks at {where}; start the engine "
            f"with max_logprobs >= {k} and request prompt_logprobs={k}, logprobs={k}."
        )
    pairs = [by_rank[r] for r in range(1, k + 1)]
    return (
        np.fromiter((p[0] for p in pairs), np.int32, k),
        np.fromiter((p[1] for p in pairs), np.float32, k),
    )


def _position(entry: Mapping[int, Any], k: int, where: str) -> tuple[np.ndarray, np.ndarray]:
    """One ``{token_id: Logprob}`` position."""
    items = list(entry.items())
    return _select(
        [t for t, _ in items],
        [lp.logprob for _, lp in items],
        [lp.rank for _, lp in items],
        k,
        where,
    )


def _positions(container: Any) -> list[Any]:
    """Per-position entries of a list-of-dicts or a FlatLogprobs-shaped object, as
    ``(token_ids, logprobs, ranks)`` triples or dicts (None for an empty position)."""
    if hasattr(container, "start_indices") and hasattr(container, "token_ids"):
        out = []
        for s, e in zip(container.start_indices, container.end_indices):
            if s == e:
                out.append(None)
            else:
                out.append(
                    (
                        container.token_ids[s:e],
                        container.logprobs[s:e],
                        container.ranks[s:e],
                    )
                )
        return out
    return list(container)


def _convert_one(entry: Any, k: int, where: str) -> tuple[np.ndarray, np.ndarray]:
    if entry is None:
        raise TeacherError(f"vLLM returned no log-probs at {where}")
    if isinstance(entry, tuple):
        return _select(*entry, k, where)
    return _position(entry, k, where)


def request_to_payload(
    prompt_logprobs: Any, next_logprobs: Any, *, num_tokens: int, top_k: int
) -> dict[str, np.ndarray]:
    """One request's ``prompt_logprobs`` and the generated token's ``logprobs`` -> our row.

    ``next_logprobs`` is ``outputs[0].logprobs`` (a list or FlatLogprobs whose first position
    is the distribution after the last prompt token).
    """
    prompt = _positions(prompt_logprobs)
    if len(prompt) != num_tokens:
        raise TeacherError(
            f"vLLM returned prompt log-probs for {len(prompt)} positions, expected {num_tokens}"
        )
    if prompt and prompt[0] not in (None, {}):
        raise TeacherError("vLLM prompt log-probs should start with None at position 0")
    nxt = _positions(next_logprobs)
    if not nxt:
        raise TeacherError("vLLM returned no log-probs for the generated token (max_tokens=1)")
    entries = prompt[1:] + [nxt[0]]
    ids = np.zeros((num_tokens, top_k), np.int32)
    vals = np.zeros((num_tokens, top_k), np.float32)
    for t, entry in enumerate(entries):
        ids[t], vals[t] = _convert_one(entry, top_k, f"row position {t}")
    return {"topk_ids": ids, "topk_logprobs": vals, "tail_logmass": tail_from_topk(vals)}
