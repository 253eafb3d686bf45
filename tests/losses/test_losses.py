"""Each sparse loss and its gradient against an explicit dense reference over the full vocab.

The references build the teacher distribution densely ([N, V], float64), take its top-k and
tail exactly as a cache stores them, and evaluate the textbook formula with full-V sums; the
losses under test only ever see the cached top-k ids/log-probs/tail mass.
"""

from __future__ import annotations

import math

import pytest
import torch

from logitcache.errors import ConfigError
from logitcache.losses import LossConfig, compute_loss, jsd, kl_tail, kl_topk, reverse_kl, rs_kd

V, N, K = 50, 7, 6


def make_case(seed=0, n=N, v=V, k=K, peak=3.0):
    g = torch.Generator().manual_seed(seed)
    t_logits = torch.randn(n, v, generator=g, dtype=torch.float64) * 1.5
    t_logits[torch.arange(n), torch.randint(0, v, (n,), generator=g)] += peak
    logp = torch.log_softmax(t_logits, -1)
    top_lp, top_ids = logp.topk(k, dim=-1)
    tail = torch.log1p(-top_lp.exp().sum(-1))
    s_logits = torch.randn(n, v, generator=g, dtype=torch.float64)
    return {
        "p": logp.exp(),
        "ids": top_ids,
        "lp": top_lp.float(),
        "tail": tail.float(),
        "z": s_logits,
    }


def bucketise(dist: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """[N, V] probabilities -> [N, k+1] (top-k ids, then the sum over every other id)."""
    top = dist.gather(-1, ids)
    in_top = torch.zeros_like(dist, dtype=torch.bool).scatter(-1, ids, True)
    rest = (dist * ~in_top).sum(-1, keepdim=True)
    return torch.cat([top, rest], -1)


def tempered_teacher_dense(p: torch.Tensor, ids: torch.Tensor, t: float) -> torch.Tensor:
    """The documented approximation, built densely: top-k at p^(1/T), the tail spread
    uniformly over the V-k other ids and each tempered, then normalised over all V."""
    v, k = p.shape[-1], ids.shape[-1]
    in_top = torch.zeros_like(p, dtype=torch.bool).scatter(-1, ids, True)
    tail = (p * ~in_top).sum(-1, keepdim=True)
    dense = torch.where(in_top, p, tail / (v - k)) ** (1.0 / t)
    return dense / dense.sum(-1, keepdim=True)


def dense_reference(kind, c, t=1.0, beta=0.5):
    """Per-position loss from full-V dense tensors (float64), differentiable w.r.t. c['z']."""
    p = tempered_teacher_dense(c["p"], c["ids"], t)
    q = torch.softmax(c["z"] / t, -1)
    if kind == "kl_topk":
        pb, qb = p.gather(-1, c["ids"]), q.gather(-1, c["ids"])
        pb, qb = pb / pb.sum(-1, keepdim=True), qb / qb.sum(-1, keepdim=True)
    else:
        pb, qb = bucketise(p, c["ids"]), bucketise(q, c["ids"])
    if kind in ("kl_tail", "kl_topk"):
        return (pb * (pb.log() - qb.log())).sum(-1)
    if kind == "reverse_kl":
        return (qb * (qb.log() - pb.log())).sum(-1)
    if kind == "jsd":
        m = beta * pb + (1 - beta) * qb
        return beta * (pb * (pb / m).log()).sum(-1) + (1 - beta) * (qb * (qb / m).log()).sum(-1)
    raise ValueError(kind)


SPARSE = {
    "kl_tail": lambda z, c, t, b: kl_tail(
        z, c["ids"], c["lp"], c["tail"], temperature=t, vocab_size=V
    ),
    "kl_topk": lambda z, c, t, b: kl_topk(z, c["ids"], c["lp"], c["tail"], temperature=t),
    "reverse_kl": lambda z, c, t, b: reverse_kl(
        z, c["ids"], c["lp"], c["tail"], temperature=t, vocab_size=V
    ),
    "jsd": lambda z, c, t, b: jsd(
        z, c["ids"], c["lp"], c["tail"], beta=b, temperature=t, vocab_size=V
    ),
}


@pytest.mark.parametrize("kind", list(SPARSE))
@pytest.mark.parametrize("t", [1.0, 2.0, 0.7])
def test_loss_and_gradient_match_dense_reference(kind, t):
    c = make_case(seed=list(SPARSE).index(kind) * 10 + int(t * 10))
    beta = 0.3
    z = c["z"].float().requires_grad_(True)
    got = SPARSE[kind](z, c, t, beta)
    (g_got,) = torch.autograd.grad(got.sum(), z)

    zr = c["z"].clone().requires_grad_(True)
    ref = dense_reference(kind, {**c, "z": zr}, t=t, beta=beta)
    (g_ref,) = torch.autograd.grad(ref.sum(), zr)

    torch.testing.assert_close(got.double(), ref, atol=2e-5, rtol=2e-4)
    torch.testing.assert_close(g_got.double(), g_ref, atol=2e-6, rtol=2e-4)
    assert (got > -1e-6).all()  # divergences are non-negative


def test_kl_tail_bounds_the_full_kl_and_is_exact_when_tail_is_one_id():
    c = make_case(seed=3)
    q = torch.softmax(c["z"], -1)
    full = (c["p"] * (c["p"].log() - q.log())).sum(-1)
    sparse = kl_tail(c["z"].float(), c["ids"], c["lp"], c["tail"]).double()
    assert (sparse <= full + 1e-5).all()  # merging ids into a bucket never increases KL

    c1 = make_case(seed=4, k=V - 1)
    q1 = torch.softmax(c1["z"], -1)
    full1 = (c1["p"] * (c1["p"].log() - q1.log())).sum(-1)
    sparse1 = kl_tail(c1["z"].float(), c1["ids"], c1["lp"], c1["tail"]).double()
    torch.testing.assert_close(sparse1, full1, atol=2e-5, rtol=1e-4)


def test_student_tail_is_stable_when_student_is_confident():
    c = make_case(seed=5)
    z = torch.full((N, V), -40.0)
    z.scatter_(-1, c["ids"], 30.0)  # student mass outside top-k ~ exp(-70): log1p(-sum) -> -inf
    z.requires_grad_(True)
    loss = kl_tail(z, c["ids"], c["lp"], c["tail"])
    loss.sum().backward()
    assert torch.isfinite(loss).all() and torch.isfinite(z.grad).all()
    assert (loss > 1.0).all()  # the teacher's tail mass is far from the student's ~e^-70


def batch_from(c, labels=None):
    n = c["ids"].shape[0]
    return {
        "labels": torch.arange(n) % V if labels is None else labels,
        "topk_ids": c["ids"],
        "topk_logprobs": c["lp"],
        "tail_logmass": c["tail"],
    }


@pytest.mark.parametrize("t,alpha", [(1.0, 0.0), (2.0, 0.0), (2.0, 0.4), (1.0, 1.0)])
def test_compute_loss_temperature_scaling_and_alpha_mixing(t, alpha):
    c = make_case(seed=7)
    batch = batch_from(c)
    loss, metrics = compute_loss(
        c["z"].float(), batch, LossConfig(kind="kl_tail", temperature=t, alpha=alpha), vocab_size=V
    )
    kd = dense_reference("kl_tail", c, t=t).mean() * t * t
    ce = torch.nn.functional.cross_entropy(c["z"], batch["labels"])
    expected = (1 - alpha) * kd + alpha * ce
    torch.testing.assert_close(loss.double(), expected, atol=2e-5, rtol=2e-4)
    torch.testing.assert_close(metrics["kd"].double(), kd, atol=2e-5, rtol=2e-4)
    torch.testing.assert_close(metrics["ce"].double(), ce, atol=2e-5, rtol=2e-4)
    assert int(metrics["tokens"]) == N


def test_ce_kind_is_plain_cross_entropy():
    c = make_case(seed=8)
    batch = batch_from(c)
    loss, _ = compute_loss(c["z"].float(), batch, LossConfig(kind="ce"))
    ref = torch.nn.functional.cross_entropy(c["z"], batch["labels"])
    torch.testing.assert_close(loss.double(), ref, atol=1e-5, rtol=1e-5)


def draws_to_rows(counts: torch.Tensor):
    """Dense [M, V] counts -> the cache's padded (rs_ids, rs_counts) with count-0 padding."""
    width = int((counts > 0).sum(-1).max())
    order = counts.argsort(dim=-1, descending=True, stable=True)[:, :width]
    return order, counts.gather(-1, order)


def test_rs_kd_is_unbiased_for_the_dense_cross_entropy_and_kl_gradient():
    c = make_case(seed=11, n=1, v=40)
    p, z = c["p"][0], c["z"][0]
    reps, n_draws = 3000, 12
    g = torch.Generator().manual_seed(0)
    draws = torch.multinomial(p.expand(reps, -1), n_draws, replacement=True, generator=g)
    counts = torch.zeros(reps, p.numel(), dtype=torch.long).scatter_add_(
        1, draws, torch.ones_like(draws)
    )
    rs_ids, rs_counts = draws_to_rows(counts)
    assert (rs_counts.sum(-1) == n_draws).all()

    zz = z.float().expand(reps, -1).clone().requires_grad_(True)
    est = rs_kd(zz, rs_ids, rs_counts.float() / n_draws)  # [reps], one estimate per draw set
    (grad,) = torch.autograd.grad(est.sum(), zz)

    logq = torch.log_softmax(z, -1)
    dense_ce = -(p * logq).sum()
    se = est.double().std() / math.sqrt(reps)
    assert abs(est.double().mean() - dense_ce) < 5 * se

    # d/dz KL(p||softmax z) = softmax(z) - p; per-id standard error of the mean draw frequency
    kl_grad = torch.softmax(z, -1) - p
    g_se = grad.double().std(0) / math.sqrt(reps) + 1e-9
    assert ((grad.double().mean(0) - kl_grad).abs() <= 5 * g_se + 1e-6).all()

    # and through compute_loss, with positions as a batch: same value as the mean estimate
    batch = {
        "labels": torch.zeros(reps, dtype=torch.long),
        "rs_ids": rs_ids,
        "rs_weights": rs_counts.float() / n_draws,
    }
    loss, _ = compute_loss(z.float().expand(reps, -1), batch, LossConfig(kind="rs_kd"))
    torch.testing.assert_close(loss, est.mean().detach(), atol=1e-5, rtol=1e-5)


def test_masked_positions_do_not_affect_loss_or_gradient():
    c = make_case(seed=12)
    labels = torch.arange(N) % V
    labels[[1, 4]] = -100
    z = c["z"].float().requires_grad_(True)
    cfg = LossConfig(kind="kl_tail", alpha=0.5)
    loss, m = compute_loss(z, batch_from(c, labels), cfg)
    loss.backward()
    assert int(m["tokens"]) == N - 2
    assert (z.grad[[1, 4]] == 0).all() and (z.grad[[0, 2, 3, 5, 6]] != 0).any()

    keep = labels != -100
    sub = {
        k: v[keep]
        for k, v in {
            "ids": c["ids"],
            "lp": c["lp"],
            "tail": c["tail"],
            "z": c["z"],
            "p": c["p"],
        }.items()
    }
    ref = 0.5 * dense_reference("kl_tail", sub).mean() + 0.5 * torch.nn.functional.cross_entropy(
        sub["z"], labels[keep]
    )
    torch.testing.assert_close(loss.double(), ref, atol=2e-5, rtol=2e-4)

    # garbage in the masked positions' targets changes nothing
    c2 = dict(c, lp=c["lp"].clone(), tail=c["tail"].clone())
    c2["lp"][[1, 4]] = float("nan")
    c2["tail"][[1, 4]] = float("-inf")
    loss2, _ = compute_loss(c["z"].float(), batch_from(c2, labels), cfg)
    torch.testing.assert_close(loss2, loss.detach())


@pytest.mark.parametrize("kind", ["kl_tail", "kl_topk", "reverse_kl", "jsd", "rs_kd"])
def test_padded_batch_has_no_nan(kind):
    """A [B, T] batch as collate pads it: padded positions carry -inf/zero targets and -100."""
    b, t, k, u = 2, 5, 4, 3
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(b, t, V, generator=g).requires_grad_(True)
    labels = torch.randint(0, V, (b, t), generator=g)
    labels[1, 2:] = -100
    labels[:, -1] = -100
    ids = torch.stack([torch.randperm(V, generator=g)[:k] for _ in range(b * t)]).view(b, t, k)
    lp = torch.log_softmax(torch.randn(b, t, k + 1, generator=g), -1)
    topk_lp, tail = lp[..., :k].clone(), lp[..., k].clone()
    topk_lp[1, 2:] = float("-inf")
    tail[1, 2:] = float("-inf")
    tail[0, 0] = float("-inf")  # a real position whose top-k holds all the mass
    rs_ids = torch.randint(0, V, (b, t, u), generator=g)
    rs_w = torch.tensor([0.5, 0.5, 0.0]).expand(b, t, u).clone()
    rs_w[1, 2:] = 0.0
    batch = {
        "labels": labels,
        "topk_ids": ids,
        "topk_logprobs": topk_lp,
        "tail_logmass": tail,
        "rs_ids": rs_ids,
        "rs_weights": rs_w,
    }
    loss, _ = compute_loss(logits, batch, LossConfig(kind=kind, alpha=0.2))
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(logits.grad).all()
    assert (logits.grad[1, 2:] == 0).all()

    all_masked = dict(batch, labels=torch.full((b, t), -100))
    logits.grad = None
    loss0, m0 = compute_loss(logits, all_masked, LossConfig(kind=kind))
    loss0.backward()
    assert loss0.item() == 0.0 and int(m0["tokens"]) == 0
    assert (logits.grad == 0).all()


def test_chunked_equals_unchunked_in_value_and_gradient():
    c = make_case(seed=13, n=23)
    batch = batch_from(c)
    grads = []
    values = []
    for chunk in (None, 5):
        z = c["z"].float().requires_grad_(True)
        loss, _ = compute_loss(
            z,
            batch,
            LossConfig(kind="jsd", alpha=0.3, temperature=1.5, chunk_size=chunk),
            vocab_size=V,
        )
        loss.backward()
        values.append(loss.detach())
        grads.append(z.grad)
    torch.testing.assert_close(values[0], values[1])
    torch.testing.assert_close(grads[0], grads[1])


def test_bf16_logits_are_upcast():
    c = make_case(seed=14)
    z = c["z"].to(torch.bfloat16).requires_grad_(True)
    loss, _ = compute_loss(z, batch_from(c), LossConfig())
    loss.backward()
    ref = dense_reference("kl_tail", dict(c, z=c["z"].to(torch.bfloat16).double())).mean()
    torch.testing.assert_close(loss.double(), ref, atol=1e-4, rtol=1e-3)
    assert z.grad.dtype == torch.bfloat16 and torch.isfinite(z.grad.float()).all()


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"kind": "kl"}, "choose one of: kl_tail"),
        ({"temperature": 0.0}, "temperature must be > 0"),
        ({"alpha": 1.5}, r"alpha must be in \[0, 1\]"),
        ({"kind": "jsd", "beta": 1.0}, "beta must be in"),
        ({"kind": "rs_kd", "temperature": 2.0}, "cannot be re-tempered"),
        ({"chunk_size": 0}, "chunk_size"),
    ],
)
def test_config_validation_says_how_to_fix(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        LossConfig(**kwargs)


def test_loss_needing_absent_targets_is_refused():
    c = make_case(seed=15)
    no_topk = {
        "labels": torch.zeros(N, dtype=torch.long),
        "topk_ids": c["ids"][:, :0],
        "topk_logprobs": c["lp"][:, :0],
        "tail_logmass": c["tail"],
    }
    with pytest.raises(ConfigError, match="--loss rs_kd"):
        compute_loss(c["z"].float(), no_topk, LossConfig(kind="kl_tail"))
    with pytest.raises(ConfigError, match="--rs-samples"):
        compute_loss(c["z"].float(), batch_from(c), LossConfig(kind="rs_kd"))
