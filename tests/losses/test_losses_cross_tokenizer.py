"""ULD and GOLD-hybrid losses against dense references on small vocabularies (values and
gradients), and the batch-level wrapper (masking, chunking, hidden-state path, alpha)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from logitcache.errors import ConfigError
from logitcache.losses.cross_tokenizer import (
    cross_tokenizer_loss,
    cross_tokenizer_loss_from_hidden,
    gold,
    uld,
)

VT, VS, K, N = 40, 29, 8, 12


def _teacher(n=N, vt=VT, k=K, seed=0):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, vt, generator=g, dtype=torch.float64) * 2.5
    logp = torch.log_softmax(logits, -1)
    top_lp, top_ids = logp.topk(k, dim=-1)
    # store the top-k unsorted, as a codec may: the losses must sort themselves
    perm = torch.randperm(k, generator=g)
    top_lp, top_ids = top_lp[:, perm], top_ids[:, perm]
    tail = torch.log1p(-top_lp.exp().sum(-1).clamp(max=1 - 1e-15))
    return logp, top_ids, top_lp, tail


def _student(n=N, vs=VS, seed=1):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(n, vs, generator=g, dtype=torch.float64) * 2.0).requires_grad_(True)


def _mapping(vt=VT, vs=VS, matched=15, seed=2):
    """A one-to-one partial map teacher id -> student id (-1: no counterpart)."""
    rng = np.random.default_rng(seed)
    out = np.full(vt, -1, np.int64)
    t_ids = rng.choice(vt, matched, replace=False)
    out[t_ids] = rng.choice(vs, matched, replace=False)
    return torch.from_numpy(out)


def ref_uld(p_dense, q_dense, k):
    """Bucketed ULD from dense distributions: sorted top-k + the rest, both sides."""
    p_s = p_dense.sort(-1, descending=True).values
    q_s = q_dense.sort(-1, descending=True).values
    kk = min(k, q_s.shape[-1])
    q_top = torch.cat([q_s[:, :kk], q_s.new_zeros(q_s.shape[0], k - kk)], -1)
    return (p_s[:, :k] - q_top).abs().sum(-1) + (
        (1 - p_s[:, :k].sum(-1)) - (1 - q_top.sum(-1))
    ).abs()


def ref_gold(p_dense, q_dense, top_ids, mapping):
    """GOLD hybrid, position by position, from dense distributions and explicit sets."""
    out = []
    for r in range(p_dense.shape[0]):
        p, q = p_dense[r], q_dense[r]
        ids = top_ids[r].tolist()
        m = [a for a in ids if mapping[a] >= 0]
        u = [a for a in ids if mapping[a] < 0]
        kl = sum(p[a] * torch.log(p[a] / q[mapping[a]]) for a in m) if m else p.new_zeros(())
        p_rest = 1 - sum(p[a] for a in m) if m else p.new_ones(())
        q_rest = 1 - sum(q[mapping[a]] for a in m) if m else q.new_ones(())
        kl = kl + p_rest * torch.log(p_rest / q_rest)
        p_u = torch.stack([p[a] for a in u]).sort(descending=True).values if u else p[:0]
        taken = {int(mapping[a]) for a in m}
        q_u = torch.stack([q[j] for j in range(len(q)) if j not in taken])
        q_u = q_u.sort(descending=True).values[: len(u)]
        p_tail = 1 - p[ids].sum()
        rem = q_rest - q_u.sum()
        out.append(kl + (p_u - q_u).abs().sum() + (p_tail - rem).abs())
    return torch.stack(out)


def test_uld_matches_dense_reference_values_and_gradients():
    logp, ids, lp, tail = _teacher()
    z = _student()
    ours = uld(z, lp, tail, vocab_size=VT)
    ref = ref_uld(logp.exp(), torch.softmax(z, -1), K)
    torch.testing.assert_close(ours.double(), ref, rtol=1e-5, atol=1e-6)
    (g_ours,) = torch.autograd.grad(ours.sum(), z)
    (g_ref,) = torch.autograd.grad(ref.sum(), z)
    torch.testing.assert_close(g_ours.double(), g_ref, rtol=1e-4, atol=1e-6)


def test_uld_is_the_full_sorted_l1_when_k_covers_both_vocabularies():
    """Boizard et al.'s ULD: sum of |sorted p - sorted q|, zero-padded to the longer vector."""
    logp, ids, lp, tail = _teacher(k=VT)
    z = _student()
    p_s = logp.exp().sort(-1, descending=True).values
    q_s = torch.softmax(z, -1).sort(-1, descending=True).values
    q_s = torch.cat([q_s, q_s.new_zeros(N, VT - VS)], -1)
    full = (p_s - q_s).abs().sum(-1)
    torch.testing.assert_close(uld(z, lp, tail, vocab_size=VT).double(), full, rtol=1e-5, atol=1e-6)


def test_uld_needs_no_vocabulary_mapping_and_is_zero_for_a_permuted_copy():
    logp, ids, lp, tail = _teacher(vt=VS, k=VS)
    perm = torch.randperm(VS, generator=torch.Generator().manual_seed(5))
    z = logp[:, perm].clone().requires_grad_(True)  # same probabilities, other ids
    assert float(uld(z, lp, tail, vocab_size=VS).detach().abs().max()) < 1e-5


def test_uld_tempered_matches_reference():
    t = 2.0
    logp, ids, lp, tail = _teacher()
    z = _student()
    # reference tempering: top-k exact, the tail spread uniformly over the other V-k ids
    n_rest = VT - K
    top = (lp / t).exp()
    tail_t = n_rest * ((tail.exp() / n_rest) ** (1 / t))
    norm = top.sum(-1) + tail_t
    p_top = (top / norm.unsqueeze(-1)).sort(-1, descending=True).values
    p_tail = tail_t / norm
    q = torch.softmax(z / t, -1).sort(-1, descending=True).values[:, :K]
    ref = (p_top - q).abs().sum(-1) + (p_tail - (1 - q.sum(-1))).abs()
    torch.testing.assert_close(
        uld(z, lp, tail, temperature=t, vocab_size=VT).double(), ref, rtol=1e-5, atol=1e-6
    )


def test_gold_matches_dense_reference_values_and_gradients():
    logp, ids, lp, tail = _teacher()
    z = _student()
    mapping = _mapping()
    sids = mapping[ids]
    assert (sids >= 0).any() and (sids < 0).any()  # both parts exercised
    ours = gold(z, sids, lp, tail, vocab_size=VT)
    ref = ref_gold(logp.exp(), torch.softmax(z, -1), ids, mapping)
    torch.testing.assert_close(ours.double(), ref, rtol=1e-5, atol=1e-6)
    (g_ours,) = torch.autograd.grad(ours.sum(), z)
    (g_ref,) = torch.autograd.grad(ref.sum(), z)
    torch.testing.assert_close(g_ours.double(), g_ref, rtol=1e-4, atol=1e-6)


def test_gold_with_identical_vocabularies_and_full_k_is_the_exact_kl():
    logp, ids, lp, tail = _teacher(vt=VS, k=VS)
    z = _student()
    sids = ids.clone()  # identity map: every id matched
    full_kl = (logp.exp() * (logp - torch.log_softmax(z, -1))).sum(-1)
    ours = gold(z, sids, lp, tail, vocab_size=VS)
    torch.testing.assert_close(ours.double(), full_kl, rtol=1e-5, atol=1e-6)
    (g,) = torch.autograd.grad(ours.sum(), z)
    assert torch.isfinite(g).all()


def test_gold_with_nothing_matched_is_uld():
    logp, ids, lp, tail = _teacher()
    z = _student()
    none = torch.full_like(ids, -1)
    torch.testing.assert_close(
        gold(z, none, lp, tail, vocab_size=VT), uld(z, lp, tail, vocab_size=VT)
    )


def _batch(b=3, s=10, seed=0):
    g = torch.Generator().manual_seed(seed)
    logp, ids, lp, tail = _teacher(n=b * s, seed=seed)
    labels = torch.randint(0, VS, (b, s), generator=g)
    labels[torch.rand(b, s, generator=g) < 0.2] = -100
    kd_mask = torch.rand(b, s, generator=g) < 0.7
    return {
        "labels": labels,
        "kd_mask": kd_mask,
        "topk_ids": ids.view(b, s, K),
        "topk_logprobs": lp.float().view(b, s, K),
        "tail_logmass": tail.float().view(b, s),
        "topk_student_ids": _mapping()[ids].view(b, s, K),
    }


@pytest.mark.parametrize("method", ["uld", "gold"])
def test_batch_loss_masks_mixes_and_chunks(method):
    batch = _batch()
    z = torch.randn(3, 10, VS, dtype=torch.float32, requires_grad=True)
    loss, m = cross_tokenizer_loss(z, batch, method=method, alpha=0.3, vocab_size=VT)
    ce_mask, kd_mask = batch["labels"] != -100, batch["kd_mask"]
    ce = torch.nn.functional.cross_entropy(z[ce_mask], batch["labels"][ce_mask])
    fn = uld if method == "uld" else gold
    args = (batch["topk_student_ids"][kd_mask],) if method == "gold" else ()
    kd = fn(
        z[kd_mask], *args, batch["topk_logprobs"][kd_mask], batch["tail_logmass"][kd_mask],
        vocab_size=VT,
    ).mean()  # fmt: skip
    torch.testing.assert_close(loss, 0.7 * kd + 0.3 * ce)
    assert int(m["tokens"]) == int(ce_mask.sum()) and int(m["kd_tokens"]) == int(kd_mask.sum())
    (g_full,) = torch.autograd.grad(loss, z)
    loss_c, _ = cross_tokenizer_loss(
        z, batch, method=method, alpha=0.3, vocab_size=VT, chunk_size=7
    )
    (g_chunk,) = torch.autograd.grad(loss_c, z)
    torch.testing.assert_close(loss_c, loss)
    torch.testing.assert_close(g_chunk, g_full)


def test_hidden_state_path_equals_logits_path():
    batch = _batch()
    h = torch.randn(3, 10, 16, requires_grad=True)
    w = torch.randn(VS, 16, requires_grad=True)
    loss_h, _ = cross_tokenizer_loss_from_hidden(
        h, w, batch, method="gold", chunk_size=5, vocab_size=VT
    )
    loss_z, _ = cross_tokenizer_loss(h @ w.T, batch, method="gold", vocab_size=VT)
    torch.testing.assert_close(loss_h, loss_z)
    gh = torch.autograd.grad(loss_h, (h, w))
    gz = torch.autograd.grad(loss_z, (h, w))
    for a, b in zip(gh, gz):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_alpha_one_is_ce_only_and_empty_batches_are_zero():
    batch = _batch()
    z = torch.randn(3, 10, VS, requires_grad=True)
    loss, m = cross_tokenizer_loss(z, batch, method="uld", alpha=1.0, vocab_size=VT)
    mask = batch["labels"] != -100
    torch.testing.assert_close(
        loss, torch.nn.functional.cross_entropy(z[mask], batch["labels"][mask])
    )
    empty = {**batch, "labels": torch.full_like(batch["labels"], -100)}
    empty["kd_mask"] = torch.zeros_like(batch["kd_mask"])
    loss, _ = cross_tokenizer_loss(z, empty, method="uld", vocab_size=VT)
    assert float(loss.detach()) == 0.0 and not math.isnan(float(loss.detach()))
    loss.backward()


def test_gold_without_mapped_ids_in_the_batch_names_the_fix():
    batch = _batch()
    del batch["topk_student_ids"]
    with pytest.raises(ConfigError, match="vocab_map=True"):
        cross_tokenizer_loss(torch.randn(3, 10, VS), batch, method="gold")
