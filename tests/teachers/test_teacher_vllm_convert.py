"""vLLM output -> payload, on fixtures shaped exactly like vLLM's prompt/sample log-probs."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pytest

from logitcache.errors import TeacherError
from logitcache.teachers.vllm_convert import request_to_payload


@dataclass
class Logprob:  # stand-in with vLLM's attributes
    logprob: float
    rank: int | None = None
    decoded_token: str | None = None


@dataclass
class FlatLogprobs:  # stand-in with vLLM's FlatLogprobs fields
    start_indices: list[int] = field(default_factory=list)
    end_indices: list[int] = field(default_factory=list)
    token_ids: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    ranks: list[int | None] = field(default_factory=list)
    decoded_tokens: list[str | None] = field(default_factory=list)


def dists(t, vocab=50, seed=0):
    rng = np.random.default_rng(seed)
    logits = rng.standard_normal((t, vocab)) * 2
    return logits - np.log(np.exp(logits).sum(1, keepdims=True))


def vllm_position(logp, actual, k, flat=False):
    """(token_ids, logprobs, ranks) for one position, as vLLM builds them: the actual token at
    its true rank first, then ranks 1..k (duplicated in flat form, merged in dict form)."""
    order = np.argsort(-logp, kind="stable")
    rank_of = {int(tok): r + 1 for r, tok in enumerate(order)}
    entries = [(actual, logp[actual], rank_of[actual])]
    entries += [(int(order[r]), logp[order[r]], r + 1) for r in range(k)]
    if flat:
        return entries
    return {tid: Logprob(float(lp), rank) for tid, lp, rank in entries}


def build(prompt, logp, next_token, k, flat):
    """vLLM's prompt_logprobs (None first) and outputs[0].logprobs for one request."""
    t = len(prompt)
    positions = [None] + [vllm_position(logp[j - 1], prompt[j], k, flat) for j in range(1, t)]
    nxt = [vllm_position(logp[t - 1], next_token, k, flat)]
    if not flat:
        return positions, nxt

    def to_flat(pos):
        f = FlatLogprobs()
        for entries in pos:
            f.start_indices.append(len(f.token_ids))
            for tid, lp, rank in entries or []:
                f.token_ids.append(tid)
                f.logprobs.append(float(lp))
                f.ranks.append(rank)
                f.decoded_tokens.append(None)
            f.end_indices.append(len(f.token_ids))
        return f

    return to_flat(positions), to_flat(nxt)


@pytest.mark.parametrize("flat", [False, True])
def test_conversion_matches_reference(flat):
    k, t = 5, 9
    logp = dists(t)
    rng = np.random.default_rng(1)
    prompt = [int(x) for x in rng.integers(0, 50, size=t)]
    # make some prompt tokens the argmax (k entries in dict form), others far outside the top-k
    prompt[2] = int(np.argmax(logp[1]))
    prompt[3] = int(np.argmin(logp[2]))
    prompt_lp, next_lp = build(prompt, logp, next_token=int(np.argmax(logp[-1])), k=k, flat=flat)
    if not flat:
        assert len(prompt_lp[2]) == k and len(prompt_lp[3]) == k + 1
    got = request_to_payload(prompt_lp, next_lp, num_tokens=t, top_k=k)
    ref_ids = np.argsort(-logp, axis=1, kind="stable")[:, :k]
    np.testing.assert_array_equal(got["topk_ids"], ref_ids)
    np.testing.assert_allclose(got["topk_logprobs"], np.take_along_axis(logp, ref_ids, 1), 1e-6)
    ref_tail = np.log1p(-np.exp(np.take_along_axis(logp, ref_ids, 1)).sum(1))
    np.testing.assert_allclose(got["tail_logmass"], ref_tail, atol=1e-6)
    assert got["topk_ids"].dtype == np.int32 and got["tail_logmass"].dtype == np.float32


def test_missing_ranks_and_bad_shapes_are_errors():
    logp = dists(3)
    prompt_lp, next_lp = build([1, 2, 3], logp, next_token=4, k=3, flat=False)
    with pytest.raises(TeacherError, match="max_logprobs >= 6"):
        request_to_payload(prompt_lp, next_lp, num_tokens=3, top_k=6)
    with pytest.raises(TeacherError, match="expected 4"):
        request_to_payload(prompt_lp, next_lp, num_tokens=4, top_k=3)
    with pytest.raises(TeacherError, match="generated token"):
        request_to_payload(prompt_lp, [], num_tokens=3, top_k=3)
    with pytest.raises(TeacherError, match="None at position 0"):
        request_to_payload(prompt_lp[1:] + [next_lp[0]], next_lp, num_tokens=3, top_k=3)


def test_single_token_prompt_uses_generated_position():
    logp = dists(1)
    prompt_lp, next_lp = build([7], logp, next_token=3, k=2, flat=True)
    got = request_to_payload(prompt_lp, next_lp, num_tokens=1, top_k=2)
    np.testing.assert_array_equal(got["topk_ids"][0], np.argsort(-logp[0], kind="stable")[:2])
