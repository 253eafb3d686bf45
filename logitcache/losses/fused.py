"""The student's output layer fused with the sparse KD loss: from final hidden states
``[N, d]`` and the output weight ``[V, d]`` to one scalar, without an ``[N, V]`` tensor.

Why: for small students the output layer and a loss over dense ``[N, V]`` logits cost more than
the whole model body (V = 49,152 to 262,144 against d = 32 to 2,048). Here positions are taken
a chunk at a time: each chunk computes its logits (one matmul), its loss terms, and, in the
same pass, the gradient of the loss with respect to its logits, which two more matmuls turn
into this chunk's share of the gradients for the hidden states and the weight (as Liger-Kernel
does). The chunk's logit buffer is then reused by the next chunk, so peak memory is one
``[chunk, V]`` float32 buffer (plus the ``[V, d]`` weight gradient that any training step holds)
instead of several ``[N, V]`` tensors, and backward is a multiplication by the incoming scalar.

The cost per chunk is one matmul, about five elementwise passes over the chunk's logits (max,
subtract, exp, sum, scale; all in place on the same buffer, which at the default chunk size
stays in the CPU's cache) and the two gradient matmuls. Everything that depends on the teacher
lives on the ``[N, k+1]`` buckets: the student's bucket log-probs are formed from the chunk's
row sums, the loss is the same bucket-level expression the dense path uses
(:data:`logitcache.losses.divergences.BUCKET_LOSSES`), and its gradient with respect to the
buckets comes from autograd on that small tensor; the chain rule through the softmax to the
dense logits is applied here by hand:

    d logq_i / dz_j    = (1/T) (delta_ij - s_j)                  (i in top-k)
    d logq_tail / dz_j = (1/T) (r_j [j in tail] - s_j)            s = softmax(z/T), r = s / q_tail

so every tail entry of the gradient is one per-row scalar times ``exp((z_j - max)/T)``, and
only the k top-k entries need individual values.

Numerics: the tail bucket is summed directly (top-k entries zeroed first), never as
``1 - sum(top-k)``. A row whose tail mass underflows float32 relative to its maximum (below
1e-20) is recomputed exactly with the dense functions, so confident students stay finite and
agree with :func:`~logitcache.losses.compute_loss`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace

import torch

from logitcache.errors import ConfigError
from logitcache.losses import divergences as D
from logitcache.losses.acceptance import acceptance_bounds_from_buckets
from logitcache.losses.buckets import teacher_buckets
from logitcache.losses.compute import _kd_fn, _targets
from logitcache.losses.config import LossConfig

# A chunk's float32 logit buffer holds about this many elements: 2^22 = 16 MiB, which stays in
# the CPU's L3 cache across the elementwise passes; on GPUs bigger chunks feed the
# matmuls better (pass chunk_size).
DEFAULT_CHUNK_ELEMENTS = 2**22
MIN_CHUNK = 16
# A row whose student tail mass is below this (relative to the row's largest term) is
# recomputed with the dense, separately-maximised log-sum-exp.
_TAIL_UNDERFLOW = 1e-20


def default_chunk_size(vocab: int, device: torch.device | str = "cpu") -> int:
    """Positions per chunk: about ``DEFAULT_CHUNK_ELEMENTS`` logits on CPU, 8x that on GPU."""
    budget = DEFAULT_CHUNK_ELEMENTS * (8 if torch.device(device).type == "cuda" else 1)
    return max(MIN_CHUNK, budget // max(1, vocab))


@dataclass(frozen=True)
class _Plan:
    """What one call computes; shared by every chunk."""

    cfg: LossConfig
    kind: str
    temperature: float  # 1 for ce (cross-entropy is never tempered)
    beta: float
    w_kd: float  # d loss / d (sum of per-position KD terms)
    w_ce: float  # d loss / d (sum of per-position CE terms)
    teacher_vocab: int
    with_tail: bool
    softcap: float | None
    chunk: int
    matmul_dtype: torch.dtype
    want_argmax: bool
    want_alpha: bool = False  # speculative-acceptance bounds from the buckets (kl_tail, T=1)


def fused_loss(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    batch: Mapping[str, torch.Tensor],
    cfg: LossConfig,
    *,
    bias: torch.Tensor | None = None,
    vocab_size: int | None = None,
    chunk_size: int | None = None,
    softcap: float | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """:func:`~logitcache.losses.compute_loss` of ``hidden @ weight.T + bias``, never built.

    ``hidden`` is ``[B, T, d]`` (or ``[N, d]`` with ``[N]``-shaped batch entries), ``weight``
    the output layer's ``[V, d]`` (for tied embeddings, the embedding matrix itself: its
    gradient accumulates with the input side's), ``softcap`` a final logit soft-cap
    ``c * tanh(z / c)`` (Gemma 2's ``final_logit_softcapping``). ``vocab_size`` is the
    teacher's V (``manifest.vocab_size``); ``chunk_size`` defaults to ``cfg.chunk_size``, then
    to :func:`default_chunk_size`. Returns the loss and the same detached metrics.
    """
    labels = batch["labels"]
    _check_shapes(hidden, weight, bias, labels)
    mask = labels != -100
    h = hidden[mask]  # [N, d]: only target positions enter the output layer
    targets = _targets(batch, cfg, mask)
    n = h.shape[0]
    if n == 0:  # nothing to learn from: a zero that keeps the graph connected, never NaN
        zero = hidden.sum() * 0.0 + weight.sum() * 0.0
        if bias is not None:
            zero = zero + bias.sum() * 0.0
        return zero, {
            "loss": zero.detach(),
            "kd": zero.detach(),
            "ce": zero.detach(),
            "tokens": torch.zeros((), dtype=torch.long),
        }
    plan = _plan(cfg, n, h, weight, vocab_size, chunk_size or cfg.chunk_size, softcap, targets)
    y = labels[mask]
    need_grad = torch.is_grad_enabled() and any(
        t is not None and t.requires_grad for t in (h, weight, bias)
    )
    if need_grad:
        loss, kd, ce = _FusedLinearLoss.apply(h, weight, bias, (plan, y, targets))
    else:
        rows = _run(h, weight, bias, y, targets, plan, grads=None)
        loss, kd, ce = _reduce(rows, cfg, n)
    metrics = {
        "loss": loss.detach(),
        "kd": kd.detach(),
        "ce": ce.detach(),
        "tokens": torch.tensor(n, dtype=torch.long),
    }
    return loss, metrics


@torch.no_grad()
def fused_position_metrics(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    batch: Mapping[str, torch.Tensor],
    *,
    kind: str = "kl_tail",
    bias: torch.Tensor | None = None,
    vocab_size: int | None = None,
    chunk_size: int | None = None,
    softcap: float | None = None,
    alpha: bool = False,
) -> dict[str, torch.Tensor]:
    """Per target position, at T=1 and without ``[N, V]``: ``kd`` (the ``kind`` loss),
    ``ce`` (cross-entropy on the labels) and ``argmax`` (the student's top id). For
    held-out evaluation; rows follow ``batch["labels"] != -100`` in order. ``alpha=True``
    (``kl_tail`` with a tail bucket) adds ``alpha_lower`` / ``alpha_upper``, the bounds of
    :func:`logitcache.losses.acceptance.acceptance_bounds_from_buckets`."""
    labels = batch["labels"]
    _check_shapes(hidden, weight, bias, labels)
    cfg = LossConfig(kind=kind)
    mask = labels != -100
    h = hidden[mask]
    targets = _targets(batch, cfg, mask)
    if h.shape[0] == 0:
        empty = torch.zeros(0, device=h.device)
        out = {"kd": empty, "ce": empty, "argmax": empty.long()}
        return {**out, "alpha_lower": empty, "alpha_upper": empty} if alpha else out
    plan = _plan(cfg, h.shape[0], h, weight, vocab_size, chunk_size, softcap, targets)
    want_alpha = alpha and kind == "kl_tail" and plan.with_tail
    plan = replace(plan, want_argmax=True, want_alpha=want_alpha)
    bounds = (torch.empty(h.shape[0], device=h.device), torch.empty(h.shape[0], device=h.device))
    kd, ce, argmax = _run(
        h,
        weight,
        bias,
        labels[mask],
        targets,
        plan,
        grads=None,
        alpha=bounds if want_alpha else None,
    )
    out = {"kd": kd, "ce": ce, "argmax": argmax}
    if alpha:
        if not want_alpha:
            raise ConfigError(
                f"acceptance bounds need kind='kl_tail' and a tail bucket (k < V), got {kind!r}"
            )
        out["alpha_lower"], out["alpha_upper"] = bounds
    return out


def _check_shapes(hidden, weight, bias, labels) -> None:
    if hidden.shape[:-1] != labels.shape:
        raise ConfigError(
            f"hidden states {tuple(hidden.shape)} do not match labels {tuple(labels.shape)}; "
            "pass the final hidden state of every input position ([B, T, d])"
        )
    if weight.dim() != 2 or weight.shape[1] != hidden.shape[-1]:
        raise ConfigError(
            f"output weight {tuple(weight.shape)} does not fit hidden size {hidden.shape[-1]}; "
            "pass the [V, d] weight of the output layer (model.get_output_embeddings().weight)"
        )
    if bias is not None and bias.shape != (weight.shape[0],):
        raise ConfigError(f"output bias {tuple(bias.shape)} must be [V={weight.shape[0]}]")


def _plan(cfg, n, h, weight, vocab_size, chunk_size, softcap, targets) -> _Plan:
    if softcap is not None and not softcap > 0:
        raise ConfigError(f"softcap must be > 0 (or None for no soft-cap), got {softcap}")
    v = weight.shape[0]
    teacher_v = vocab_size or v
    tempered = cfg.spec.tempered
    t2 = cfg.temperature**2 if tempered else 1.0
    if cfg.kind == "ce":
        w_kd, w_ce = 0.0, 1.0 / n
    elif cfg.alpha == 0:
        w_kd, w_ce = t2 / n, 0.0
    else:
        w_kd, w_ce = (1.0 - cfg.alpha) * t2 / n, cfg.alpha / n
    with_tail = True
    if cfg.spec.needs == "topk":
        k = targets[0].shape[-1]
        with_tail = cfg.kind != "kl_topk" and k < teacher_v
    dev = h.device.type
    if torch.is_autocast_enabled(dev):  # bf16/fp16 matmuls, float32 loss math
        mm_dtype = torch.get_autocast_dtype(dev)
    else:
        mm_dtype = torch.promote_types(h.dtype, weight.dtype)
    return _Plan(
        cfg=cfg,
        kind=cfg.kind,
        temperature=1.0 if cfg.kind == "ce" else cfg.temperature,
        beta=cfg.beta,
        w_kd=w_kd,
        w_ce=w_ce,
        teacher_vocab=teacher_v,
        with_tail=with_tail,
        softcap=softcap,
        chunk=chunk_size or default_chunk_size(v, h.device),
        matmul_dtype=mm_dtype,
        want_argmax=False,
    )


def _reduce(rows, cfg: LossConfig, n: int):
    """Per-position sums -> (loss, kd, ce) exactly as compute_loss combines them."""
    kd_rows, ce_rows, _ = rows
    ce = ce_rows.sum() / n
    if cfg.kind == "ce":
        return ce, torch.zeros((), device=ce.device), ce
    kd = kd_rows.sum() / n
    if cfg.spec.tempered:
        kd = kd * cfg.temperature**2
    loss = kd if cfg.alpha == 0 else (1.0 - cfg.alpha) * kd + cfg.alpha * ce
    return loss, kd, ce


class _FusedLinearLoss(torch.autograd.Function):
    """Gradients are computed in forward, chunk by chunk; backward only scales them."""

    @staticmethod
    def forward(ctx, h, weight, bias, extra):
        plan, y, targets = extra
        grads = {
            "h": torch.empty(h.shape, dtype=torch.float32, device=h.device)
            if h.requires_grad
            else None,
            "w": torch.zeros(weight.shape, dtype=torch.float32, device=weight.device)
            if weight.requires_grad
            else None,
            "b": torch.zeros(bias.shape, dtype=torch.float32, device=bias.device)
            if bias is not None and bias.requires_grad
            else None,
        }
        rows = _run(h, weight, bias, y, targets, plan, grads=grads)
        loss, kd, ce = _reduce(rows, plan.cfg, h.shape[0])
        kd, ce = kd.clone(), ce.clone()  # for ce, loss is ce: keep the outputs distinct
        ctx.grads = grads
        ctx.dtypes = (h.dtype, weight.dtype, None if bias is None else bias.dtype)
        ctx.mark_non_differentiable(kd, ce)
        return loss, kd, ce

    @staticmethod
    def backward(ctx, grad_loss, _grad_kd, _grad_ce):
        grads, dtypes = ctx.grads, ctx.dtypes
        ctx.grads = None
        out = []
        for key, dtype in zip(("h", "w", "b"), dtypes):
            g = grads[key]
            if g is None:
                out.append(None)
                continue
            g = g.mul_(grad_loss) if grad_loss.numel() == 1 else g * grad_loss
            out.append(g.to(dtype))
        return out[0], out[1], out[2], None


def _run(h, weight, bias, y, targets, plan: _Plan, *, grads, alpha=None):
    """Per-position (kd, ce, argmax) over all chunks; fills ``grads`` when given, and the
    (lower, upper) acceptance-bound buffers ``alpha`` when ``plan.want_alpha``.

    On CPU with several threads, the chunks are shared among that many Python threads, each
    running its chunks single-threaded into its own weight-gradient accumulator (summed at
    the end): torch ops release the GIL, and this avoids a thread barrier after every one of
    the ~10 elementwise and matmul ops per chunk, which costs more than the op itself when the
    chunk is small or the machine is busy."""
    n = h.shape[0]
    md = plan.matmul_dtype
    dev = h.device.type
    with torch.no_grad(), torch.autocast(dev, enabled=False):
        w = weight.detach().to(md)
        hm = h.detach().to(md)
        b = None if bias is None else bias.detach().float()
        kd = torch.empty(n, dtype=torch.float32, device=h.device)
        ce = torch.empty(n, dtype=torch.float32, device=h.device)
        argmax = torch.empty(n, dtype=torch.long, device=h.device) if plan.want_argmax else None
        starts = list(range(0, n, plan.chunk))
        workers = min(len(starts), torch.get_num_threads() if dev == "cpu" else 1)
        if workers <= 1:
            for start in starts:
                _one_chunk(start, hm, w, b, y, targets, plan, grads, kd, ce, argmax, alpha)
            return kd, ce, argmax
        shares = [grads] + [
            None
            if grads is None
            else {
                "h": grads["h"],
                "w": None if grads["w"] is None else torch.zeros_like(grads["w"]),
                "b": None if grads["b"] is None else torch.zeros_like(grads["b"]),
            }
            for _ in range(workers - 1)
        ]
        threads = torch.get_num_threads()

        def work(i: int) -> None:
            torch.set_num_threads(1)
            with torch.no_grad():
                for start in starts[i::workers]:
                    _one_chunk(start, hm, w, b, y, targets, plan, shares[i], kd, ce, argmax, alpha)

        try:
            with ThreadPoolExecutor(max_workers=workers) as pool:
                for f in [pool.submit(work, i) for i in range(workers)]:
                    f.result()
        finally:
            torch.set_num_threads(threads)
        if grads is not None:
            for share in shares[1:]:
                for key in ("w", "b"):
                    if grads[key] is not None:
                        grads[key].add_(share[key])
    return kd, ce, argmax


def _one_chunk(start, hm, w, b, y, targets, plan: _Plan, grads, kd, ce, argmax, alpha) -> None:
    """Logits, loss terms and gradient contributions of the chunk starting at ``start``."""
    md = plan.matmul_dtype
    sl = slice(start, min(hm.shape[0], start + plan.chunk))
    hc = hm[sl]

    def logits(rows=None):
        x = hc if rows is None else hc[rows]
        z = torch.mm(x, w.t())
        z = z if z.dtype == torch.float32 else z.float()
        if b is not None:
            z.add_(b)
        return z

    z = logits()
    cap = None
    if plan.softcap is not None:
        z.div_(plan.softcap).tanh_()
        cap = z.clone() if grads is not None else None
        z.mul_(plan.softcap)
    tgt = tuple(t[sl] for t in targets)
    kd[sl], ce[sl], am, buckets = _chunk(z, y[sl], tgt, plan, grads is not None, logits)
    if argmax is not None:
        argmax[sl] = am
    if alpha is not None and buckets is not None:
        alpha[0][sl], alpha[1][sl] = acceptance_bounds_from_buckets(*buckets)
    if grads is None:
        return
    g = z  # the buffer now holds d loss / d logits
    if cap is not None:  # d (c tanh(x/c)) / dx = 1 - tanh^2
        g.mul_(cap.mul_(cap).neg_().add_(1.0))
    gm = g if md == torch.float32 else g.to(md)
    if grads["h"] is not None:
        grads["h"][sl] = torch.mm(gm, w).float()
    if grads["w"] is not None:
        if md == torch.float32:
            grads["w"].addmm_(gm.t(), hc)
        else:
            grads["w"].add_(torch.mm(gm.t(), hc).float())
    if grads["b"] is not None:
        grads["b"].add_(g.sum(0))


def _chunk(
    z: torch.Tensor,
    y: torch.Tensor,
    targets: tuple[torch.Tensor, ...],
    plan: _Plan,
    need_grad: bool,
    logits: Callable[..., torch.Tensor],
):
    """Loss terms of one chunk from its logits ``z`` [n, V] (float32, overwritten in place:
    with ``need_grad`` it holds d loss / d z on return). Returns (kd [n], ce [n], argmax,
    buckets): ``buckets`` is the (teacher, student) bucket log-probs when ``plan.want_alpha``."""
    t = plan.temperature
    kind = plan.kind
    y = y.long()
    z_y = z.gather(1, y[:, None]).squeeze(1)
    ids = None
    if kind != "ce":
        ids = targets[0].long()
        z_ids = z.gather(1, ids)
    argmax = buckets = None
    if plan.want_argmax:
        m, argmax = z.max(1)
    else:
        m = z.amax(1)
    z.sub_(m[:, None])  # z - max <= 0: no overflow in exp
    ce_grad = need_grad and plan.w_ce > 0
    e1 = None
    if t != 1.0:  # CE is at T=1: its normaliser needs its own pass
        if ce_grad:
            e1 = torch.exp(z)
            lse1 = e1.sum(1).log()
        else:
            lse1 = torch.logsumexp(z, 1)
        z.mul_(1.0 / t)
    z.exp_()  # e_j = exp((z_j - max) / T)
    e = z

    if kind == "ce":
        s = e.sum(1)
        log_s = s.log()
        kd = torch.zeros_like(log_s)
    else:
        d_ids = (z_ids - m[:, None]) / t  # tempered, relative to the max
        if kind == "rs_kd":
            s = e.sum(1)
            log_s = s.log()
            wts = targets[1].float()
            kd = -(wts * (d_ids - log_s[:, None])).sum(1)
            a = -wts
        else:
            e_ids = d_ids.exp()
            if plan.with_tail:
                e.scatter_(1, ids, 0.0)
                s_rest = e.sum(1)
                s = s_rest + e_ids.sum(1)
                log_s = s.log()
                logq = torch.cat([d_ids - log_s[:, None], (s_rest.log() - log_s)[:, None]], 1)
                logp = teacher_buckets(
                    targets[1], targets[2], temperature=t, vocab_size=plan.teacher_vocab
                )
                if plan.want_alpha:
                    buckets = (logp, logq)
            else:
                s = e.sum(1)
                log_s = s.log()
                logq = torch.log_softmax(d_ids, 1)
                logp = teacher_buckets(targets[1], None, temperature=t)
            with torch.enable_grad():
                lq = logq.detach().requires_grad_(True)
                kd_t = D.BUCKET_LOSSES[kind](logp, lq, plan.beta)
                (a,) = torch.autograd.grad(kd_t.sum(), lq) if need_grad else (None,)
            kd = kd_t.detach()
    ce = (log_s if t == 1.0 else lse1) - (z_y - m)

    if need_grad:
        wk, wc = plan.w_kd, plan.w_ce
        coef = torch.zeros_like(s)
        top_val = None
        if kind == "rs_kd":
            coef -= wk * a.sum(1) / s
        elif kind != "ce":
            a_sum = a.sum(1, keepdim=True)
            if plan.with_tail:
                a_top, a_tail = a[:, :-1], a[:, -1]
                coef += (wk / t) * (a_tail / s_rest - a_sum[:, 0] / s)
                top_val = (wk / t) * (a_top - a_sum * e_ids / s[:, None])
                if wc > 0 and t == 1.0:  # the zeroed top-k entries get their CE share here
                    top_val += wc * e_ids / s[:, None]
            else:
                top_val = (wk / t) * (a - a_sum * lq.detach().exp())
        if wc > 0 and t == 1.0:
            coef += wc / s
        e.mul_(coef[:, None])
        if top_val is not None:
            e.scatter_add_(1, ids, top_val)
        elif kind == "rs_kd":
            e.scatter_add_(1, ids, wk * a)
        if e1 is not None:
            e.add_(e1.mul_((wc / e1.sum(1))[:, None]))
        if wc > 0:
            e.scatter_add_(1, y[:, None], torch.full_like(z_y[:, None], -wc))

    if kind not in ("ce", "rs_kd") and plan.with_tail:
        low = (s_rest < _TAIL_UNDERFLOW * s).nonzero().squeeze(1)
        if low.numel():
            _exact_rows(low, z, y, targets, plan, need_grad, logits, kd, ce)
    return kd, ce, argmax, buckets


def _exact_rows(rows, g, y, targets, plan: _Plan, need_grad, logits, kd, ce) -> None:
    """Rows whose tail underflowed: loss (and gradient) from the dense functions."""
    fn = _kd_fn(plan.cfg, plan.teacher_vocab)
    with torch.enable_grad():
        z = logits(rows)
        if plan.softcap is not None:
            z = torch.tanh(z / plan.softcap) * plan.softcap
        z = z.detach().requires_grad_(need_grad)
        kd_r = fn(z, *(t[rows] for t in targets))
        ce_r = D.cross_entropy(z, y[rows])
        if need_grad:
            (gz,) = torch.autograd.grad((plan.w_kd * kd_r + plan.w_ce * ce_r).sum(), z)
            g[rows] = gz
    kd[rows] = kd_r.detach()
    ce[rows] = ce_r.detach()


__all__ = ["DEFAULT_CHUNK_ELEMENTS", "default_chunk_size", "fused_loss", "fused_position_metrics"]
