"""The fused output layer + loss against the dense path (``hidden @ W.T`` then
``compute_loss``): same loss and gradients for every registered loss, and no [N, V] tensor."""

from __future__ import annotations

import itertools

import pytest
import torch

from logitcache.errors import ConfigError
from logitcache.losses import (
    LOSSES,
    LossConfig,
    compute_loss,
    cross_entropy,
    fused_loss,
    fused_position_metrics,
    kl_tail,
)

B, T, D, V, K, U = 3, 13, 16, 300, 8, 5  # 39 positions: chunk 7 does not divide them


def make_batch(seed=0, *, b=B, t=T, v=V, k=K, u=U, masked=True):
    g = torch.Generator().manual_seed(seed)
    t_logits = torch.randn(b, t, v, generator=g) * 2.0
    lp = torch.log_softmax(t_logits, -1)
    top, ids = lp.topk(k, -1)
    tail = torch.log1p(-top.exp().sum(-1))
    labels = torch.randint(0, v, (b, t), generator=g)
    if masked:
        labels[:, -1] = -100
        labels[1, 4:7] = -100
    rs_ids = torch.stack([torch.randperm(v, generator=g)[:u] for _ in range(b * t)]).view(b, t, u)
    rs_w = torch.rand(b, t, u, generator=g)
    rs_w[..., -1] = 0.0  # a padding entry, as the cache stores them
    rs_w = rs_w / rs_w.sum(-1, keepdim=True)
    return {
        "labels": labels,
        "topk_ids": ids.int(),
        "topk_logprobs": top,
        "tail_logmass": tail,
        "rs_ids": rs_ids.int(),
        "rs_weights": rs_w,
    }


def make_layer(seed=1, *, v=V, d=D, bias=False):
    g = torch.Generator().manual_seed(seed)
    hidden = torch.randn(B, T, d, generator=g)
    weight = torch.randn(v, d, generator=g) * 0.5
    b = torch.randn(v, generator=g) * 0.2 if bias else None
    return hidden, weight, b


def run_both(cfg, batch, hidden, weight, bias=None, softcap=None, chunk=7, vocab_size=V):
    """(loss, metrics, grads) for the dense path and the fused path, from the same leaves."""
    out = []
    for impl in ("dense", "fused"):
        leaves = [x.clone().requires_grad_(True) for x in (hidden, weight)]
        b = None if bias is None else bias.clone().requires_grad_(True)
        if impl == "dense":
            z = leaves[0] @ leaves[1].t()
            if b is not None:
                z = z + b
            if softcap is not None:
                z = torch.tanh(z / softcap) * softcap
            loss, m = compute_loss(z, batch, cfg, vocab_size=vocab_size)
        else:
            loss, m = fused_loss(
                leaves[0],
                leaves[1],
                batch,
                cfg,
                bias=b,
                vocab_size=vocab_size,
                chunk_size=chunk,
                softcap=softcap,
            )
        loss.backward()
        grads = [x.grad for x in leaves] + ([] if b is None else [b.grad])
        out.append((loss.detach(), m, grads))
    return out


def assert_agree(dense, fused):
    (l0, m0, g0), (l1, m1, g1) = dense, fused
    assert torch.isfinite(l1)
    torch.testing.assert_close(l1, l0, rtol=1e-5, atol=1e-7)
    for key in ("kd", "ce"):
        torch.testing.assert_close(m1[key], m0[key], rtol=1e-5, atol=1e-6)
    assert int(m1["tokens"]) == int(m0["tokens"])
    for a, b in zip(g1, g0):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4 * float(b.abs().max()) + 1e-7)


CASES = [
    (kind, t, alpha)
    for kind, t, alpha in itertools.product(LOSSES, (1.0, 2.0, 0.7), (0.0, 0.3))
    if not (kind == "rs_kd" and t != 1.0) and not (kind == "ce" and (t != 1.0 or alpha))
]


@pytest.mark.parametrize("kind,t,alpha", CASES)
def test_every_loss_matches_dense_in_value_and_gradient(kind, t, alpha):
    seed = sorted(LOSSES).index(kind)
    batch = make_batch(seed)
    hidden, weight, _ = make_layer(seed + 10)
    cfg = LossConfig(kind=kind, temperature=t, alpha=alpha, beta=0.3)
    assert_agree(*run_both(cfg, batch, hidden, weight))


@pytest.mark.parametrize("chunk", [1, 5, 7, 38, 39, 1000])
def test_chunk_size_does_not_change_the_result(chunk):
    batch = make_batch(3)
    hidden, weight, _ = make_layer(4)
    cfg = LossConfig(kind="kl_tail", temperature=1.5, alpha=0.2)
    assert_agree(*run_both(cfg, batch, hidden, weight, chunk=chunk))


@pytest.mark.parametrize("kind", ["kl_tail", "jsd", "rs_kd"])
def test_bias_and_softcap(kind):
    batch = make_batch(5)
    hidden, weight, bias = make_layer(6, bias=True)
    cfg = LossConfig(kind=kind, alpha=0.25)
    assert_agree(*run_both(cfg, batch, hidden * 3, weight, bias=bias, softcap=4.0))


def test_tied_weight_accumulates_both_gradients():
    """The output weight doubles as the input embedding: autograd sums both contributions."""
    batch = make_batch(7)
    g = torch.Generator().manual_seed(8)
    emb = (torch.randn(V, D, generator=g) * 0.5).requires_grad_(True)
    ids = torch.randint(0, V, (B, T), generator=g)
    grads = []
    for impl in ("dense", "fused"):
        emb.grad = None
        hidden = torch.tanh(emb[ids])  # a stand-in body reading the same matrix
        if impl == "dense":
            loss, _ = compute_loss(hidden @ emb.t(), batch, LossConfig(), vocab_size=V)
        else:
            loss, _ = fused_loss(hidden, emb, batch, LossConfig(), vocab_size=V, chunk_size=6)
        loss.backward()
        grads.append(emb.grad.clone())
    torch.testing.assert_close(grads[1], grads[0], rtol=1e-4, atol=1e-6)


def test_student_wider_than_teacher_and_topk_covering_the_vocabulary():
    batch = make_batch(9)
    hidden, weight, _ = make_layer(10, v=V + 20)  # padded embedding rows: in the tail bucket
    assert_agree(*run_both(LossConfig(kind="reverse_kl"), batch, hidden, weight))
    full = make_batch(11, v=24, k=24)  # top-k = whole vocabulary: no tail bucket
    h, w, _ = make_layer(12, v=24)
    assert_agree(*run_both(LossConfig(kind="kl_tail", alpha=0.5), full, h, w, vocab_size=24))


def test_confident_student_whose_tail_underflows_matches_dense():
    batch = make_batch(13)
    hidden, weight, _ = make_layer(14)
    # every position's top-k is the same ids, and a bias puts the student's logits there 130
    # nats above the rest: the tail mass e^-130 underflows float32 beside the max, so these
    # rows take the exact (dense, separately maximised) path
    top = torch.arange(K, dtype=torch.int32).expand(B, T, K).contiguous()
    batch["topk_ids"] = top
    bias = torch.full((V,), -100.0)
    bias[:K] = 30.0
    for cfg in (LossConfig(kind="kl_tail", alpha=0.1), LossConfig(kind="jsd")):
        dense, fused = run_both(cfg, batch, hidden, weight * 0.01, bias=bias)
        assert_agree(dense, fused)
        if cfg.kind == "kl_tail":  # the teacher's tail mass is far from the student's e^-130
            assert fused[0] > 1.0


def test_masked_positions_and_garbage_targets_do_not_matter():
    batch = make_batch(15)
    hidden, weight, _ = make_layer(16)
    cfg = LossConfig(kind="kl_tail", alpha=0.5)
    base = run_both(cfg, batch, hidden, weight)[1]
    masked = batch["labels"] == -100
    dirty = dict(batch, topk_logprobs=batch["topk_logprobs"].clone())
    dirty["topk_logprobs"][masked] = float("nan")
    h = hidden.clone()
    h[masked] = 1e6  # the output layer never sees masked positions either
    fused = run_both(cfg, dirty, h, weight)[1]
    torch.testing.assert_close(fused[0], base[0])
    assert (fused[2][0][masked] == 0).all()


@pytest.mark.parametrize("kind", ["kl_tail", "rs_kd", "ce"])
def test_empty_batch_is_a_connected_zero(kind):
    batch = make_batch(17)
    batch["labels"] = torch.full_like(batch["labels"], -100)
    hidden, weight, _ = make_layer(18)
    h, w = hidden.requires_grad_(True), weight.requires_grad_(True)
    loss, m = fused_loss(h, w, batch, LossConfig(kind=kind), vocab_size=V)
    loss.backward()
    assert loss.item() == 0.0 and int(m["tokens"]) == 0
    assert (h.grad == 0).all() and (w.grad == 0).all()


def test_no_grad_and_position_metrics_match_dense():
    batch = make_batch(19)
    hidden, weight, _ = make_layer(20)
    with torch.no_grad():
        loss, _ = fused_loss(hidden, weight, batch, LossConfig(), vocab_size=V, chunk_size=4)
        dense, _ = compute_loss(hidden @ weight.t(), batch, LossConfig(), vocab_size=V)
    torch.testing.assert_close(loss, dense, rtol=1e-5, atol=0)
    rows = fused_position_metrics(hidden, weight, batch, vocab_size=V, chunk_size=4)
    mask = batch["labels"] != -100
    z = (hidden @ weight.t())[mask]
    ref = kl_tail(
        z,
        batch["topk_ids"][mask],
        batch["topk_logprobs"][mask],
        batch["tail_logmass"][mask],
        vocab_size=V,
    )
    torch.testing.assert_close(rows["kd"], ref, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(rows["ce"], cross_entropy(z, batch["labels"][mask]))
    assert torch.equal(rows["argmax"], z.argmax(-1))


def test_no_tensor_of_n_by_v_is_allocated():
    """The point of fusing: the largest allocation is one chunk's logits, not [N, V]."""
    n_pos, v, chunk = 512, 4096, 32
    g = torch.Generator().manual_seed(21)
    hidden = torch.randn(1, n_pos, D, generator=g).requires_grad_(True)
    weight = (torch.randn(v, D, generator=g) * 0.3).requires_grad_(True)
    lp = torch.log_softmax(torch.randn(1, n_pos, 64, generator=g), -1)
    batch = {
        "labels": torch.randint(0, v, (1, n_pos), generator=g),
        "topk_ids": torch.stack([torch.randperm(v, generator=g)[:K] for _ in range(n_pos)])[None],
        "topk_logprobs": lp[..., :K],
        "tail_logmass": torch.logsumexp(lp[..., K:], -1),
    }
    from torch.profiler import ProfilerActivity, profile

    cfg = LossConfig(kind="kl_tail", alpha=0.1, temperature=2.0)
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        loss, _ = fused_loss(hidden, weight, batch, cfg, vocab_size=v, chunk_size=chunk)
        loss.backward()
    biggest = max(e.cpu_memory_usage for e in prof.events())
    assert biggest <= 2 * chunk * v * 4 < n_pos * v * 4, biggest  # float32 bytes
    assert torch.isfinite(hidden.grad).all() and weight.grad.abs().sum() > 0


def test_bad_shapes_and_softcap_are_refused():
    batch = make_batch(22)
    hidden, weight, _ = make_layer(23)
    with pytest.raises(ConfigError, match="get_output_embeddings"):
        fused_loss(hidden, weight[:, :5], batch, LossConfig())
    with pytest.raises(ConfigError, match="hidden states"):
        fused_loss(hidden[:, :3], weight, batch, LossConfig())
    with pytest.raises(ConfigError, match="softcap"):
        fused_loss(hidden, weight, batch, LossConfig(), softcap=0.0)
    with pytest.raises(ConfigError, match="--loss-impl"):
        LossConfig(impl="liger")
