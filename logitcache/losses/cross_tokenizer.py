"""Losses for a student whose tokenizer differs from the cache's teacher.

The teacher side is what the cache holds at an aligned position (:mod:`logitcache.crosstok`):
top-k log-probs over *teacher* ids plus the tail bucket. The student side is its dense logits
over *its own* ids. Two ways to compare them without a shared vocabulary:

* **ULD** (Universal Logit Distillation, Boizard et al. 2024): the L1 distance between the
  two probability vectors each sorted in decreasing order, which is the Wasserstein-1 distance
  ULD uses and needs no vocabulary mapping. With a cache it runs on buckets: the teacher's k
  sorted probabilities and its tail mass against the student's k largest probabilities and
  the mass outside them, ``sum_i |p_(i) - q_(i)| + |p_tail - q_rest|``. By the triangle
  inequality that is a lower bound of the full sorted L1, exact once k covers both supports.
* **GOLD hybrid** (the loss of TRL's GOLD trainer, adapted to buckets): teacher ids whose
  strings map one-to-one to student ids (``topk_student_ids >= 0``) are compared *exactly*,
  by KL over the buckets ``(matched ids..., everything else)``; the rest of both distributions
  (the unmatched top-k entries plus the tail, against the student's mass off the matched ids)
  is compared by the bucketed ULD above. With identical vocabularies and k = V it is the full
  ``KL(p || q)``; with nothing matched it is ULD.

Both are pure functions of tensors, one value per position; masking, chunking and the CE mix
live in :func:`cross_tokenizer_loss`. Memory: the student's float32 logits and a masked copy
exist for one chunk of positions at a time (under activation checkpointing, in backward too);
``cross_tokenizer_loss_from_hidden`` computes each chunk's logits from hidden states and the
output weight, so no ``[N, V]`` tensor ever exists for the whole batch. The sorted student
probabilities ULD needs are a ``topk`` over each chunk's logits: ULD cannot be computed in
vocabulary chunks without a running top-k merge, which is not implemented.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from logitcache.errors import ConfigError
from logitcache.losses.buckets import LOG_ZERO, teacher_buckets

METHODS = ("uld", "gold")


def _teacher_probs(topk_logprobs, tail_logmass, temperature, vocab_size):
    """Teacher log-probs over ``[top-k..., tail]`` (tail log-prob ``LOG_ZERO``-like when the
    top-k covers the whole vocabulary)."""
    k = topk_logprobs.shape[-1]
    if vocab_size is not None and k >= vocab_size:
        logp = teacher_buckets(topk_logprobs, None, temperature=temperature)
        return torch.cat([logp, torch.full_like(logp[..., :1], float("-inf"))], dim=-1)
    return teacher_buckets(
        topk_logprobs, tail_logmass, temperature=temperature, vocab_size=vocab_size
    )


def _with_sink(z: torch.Tensor) -> torch.Tensor:
    """``z`` with one extra masked column: scatters aimed at it are no-ops.

    Masked student entries hold the finite ``LOG_ZERO`` below the logits, not ``-inf``: their
    probability is exactly 0 in float32, and a log-sum-exp over nothing but masked entries
    stays finite, so its gradient is 0 rather than NaN.
    """
    return torch.cat([z, torch.full_like(z[..., :1], LOG_ZERO)], dim=-1)


def _sorted_l1(
    p_sorted: torch.Tensor,
    n_valid: torch.Tensor,
    p_tail: torch.Tensor,
    z_ext: torch.Tensor,
    lse: torch.Tensor,
) -> torch.Tensor:
    """``sum_{i < n} |p_(i) - q_(i)| + |p_tail - q_rest|`` per row.

    ``p_sorted [N, k]``: teacher probabilities sorted decreasing, valid in the first
    ``n_valid`` slots (zeros after). ``z_ext [N, V+1]``: student logits with excluded ids
    (and the sink column) at ``LOG_ZERO``; ``lse`` their normaliser over the full vocabulary. The
    student's top-``n`` come from ``topk``; everything else it holds is ``q_rest``.
    """
    k = p_sorted.shape[-1]
    v = z_ext.shape[-1] - 1
    kk = min(k, v)
    top_z, top_i = z_ext[..., :v].topk(kk, dim=-1)
    slot = torch.arange(kk, device=z_ext.device)
    valid = slot < n_valid.unsqueeze(-1)
    q_top = torch.where(valid, (top_z - lse).exp(), torch.zeros_like(top_z))
    p_top = p_sorted[..., :kk]
    l1 = torch.where(valid, (p_top - q_top).abs(), torch.zeros_like(q_top)).sum(-1)
    if k > kk:  # more teacher slots than student ids: the student holds 0 there
        l1 = l1 + p_sorted[..., kk:].sum(-1)
    drop = torch.where(valid, top_i, torch.full_like(top_i, v))
    rest = torch.logsumexp(z_ext.scatter(-1, drop, LOG_ZERO), dim=-1) - lse.squeeze(-1)
    return l1 + (p_tail - rest.exp()).abs()


def uld(
    logits: torch.Tensor,
    topk_logprobs: torch.Tensor,
    tail_logmass: torch.Tensor,
    *,
    temperature: float = 1.0,
    vocab_size: int | None = None,
) -> torch.Tensor:
    """Bucketed ULD per position: sorted teacher top-k + tail against the student's sorted
    top-k + rest. ``logits [N, V_student]``; ``vocab_size`` is the teacher's V."""
    p = _teacher_probs(topk_logprobs, tail_logmass, temperature, vocab_size).exp()
    k = topk_logprobs.shape[-1]
    p_sorted = p[..., :k].sort(dim=-1, descending=True).values
    z = logits.float() / temperature if temperature != 1.0 else logits.float()
    lse = torch.logsumexp(z, dim=-1, keepdim=True)
    n = torch.full(z.shape[:-1], k, dtype=torch.long, device=z.device)
    return _sorted_l1(p_sorted, n, p[..., k], _with_sink(z), lse)


def gold(
    logits: torch.Tensor,
    topk_student_ids: torch.Tensor,
    topk_logprobs: torch.Tensor,
    tail_logmass: torch.Tensor,
    *,
    temperature: float = 1.0,
    vocab_size: int | None = None,
) -> torch.Tensor:
    """GOLD hybrid per position: exact KL on the matched ids (``topk_student_ids >= 0``, the
    student id of each teacher top-k id) with everything else as one bucket, plus bucketed ULD
    between the unmatched remainders."""
    logp = _teacher_probs(topk_logprobs, tail_logmass, temperature, vocab_size)
    k = topk_logprobs.shape[-1]
    z = logits.float() / temperature if temperature != 1.0 else logits.float()
    v = z.shape[-1]
    lse = torch.logsumexp(z, dim=-1, keepdim=True)
    matched = topk_student_ids >= 0
    sid = torch.where(matched, topk_student_ids.long(), torch.full_like(topk_student_ids, v).long())
    z_ext = _with_sink(z)

    # exact part: KL over (matched ids..., rest)
    logq_m = z_ext.gather(-1, sid) - lse
    logp_top = logp[..., :k]
    p_top = logp_top.exp()
    kl_m = torch.where(matched, p_top * (logp_top - logq_m), torch.zeros_like(p_top)).sum(-1)
    unmatched_lp = torch.cat([logp_top.masked_fill(matched, float("-inf")), logp[..., k:]], -1)
    logp_rest = torch.logsumexp(unmatched_lp, dim=-1)
    z_rest = z_ext.scatter(-1, sid, LOG_ZERO)  # the student without the matched ids
    logq_rest = torch.logsumexp(z_rest, dim=-1) - lse.squeeze(-1)
    p_rest = logp_rest.exp()
    kl_rest = torch.where(p_rest > 0, p_rest * (logp_rest - logq_rest), torch.zeros_like(p_rest))

    # the remainders: unmatched teacher entries (+ tail) against the student off the matched ids
    p_u = torch.where(matched, torch.zeros_like(p_top), p_top).sort(dim=-1, descending=True).values
    n_u = (~matched).sum(-1)
    uld_rest = _sorted_l1(p_u, n_u, logp[..., k].exp(), z_rest, lse)
    return kl_m + kl_rest + uld_rest


def _project(weight: torch.Tensor | None, bias: torch.Tensor | None, softcap: float | None):
    if weight is None:
        return lambda x: x

    def project(x: torch.Tensor) -> torch.Tensor:
        z = F.linear(x, weight, bias)
        return torch.tanh(z / softcap) * softcap if softcap else z

    return project


def _chunked(fn: Callable, chunk_size: int | None, n: int, *tensors) -> list[torch.Tensor]:
    """``fn`` over chunks of positions; each chunk recomputed in backward (checkpoint), so its
    float32 logits and masked copies live one chunk at a time."""
    if chunk_size is None or n <= chunk_size:
        return list(fn(*tensors))
    outs: list[list[torch.Tensor]] = []
    grad = torch.is_grad_enabled() and any(
        t.requires_grad for t in tensors if t.is_floating_point()
    )
    for start in range(0, n, chunk_size):
        args = [t[start : start + chunk_size] for t in tensors]
        outs.append(list(checkpoint(fn, *args, use_reentrant=False) if grad else fn(*args)))
    return [torch.cat(parts) for parts in zip(*outs)]


def _loss(
    x: torch.Tensor,
    batch: Mapping[str, torch.Tensor],
    *,
    method: str,
    temperature: float,
    alpha: float,
    chunk_size: int | None,
    vocab_size: int | None,
    weight: torch.Tensor | None = None,
    bias: torch.Tensor | None = None,
    softcap: float | None = None,
):
    if method not in METHODS:
        raise ConfigError(f"unknown cross-tokenizer method {method!r}; choose one of {METHODS}")
    if method == "gold" and "topk_student_ids" not in batch:
        raise ConfigError(
            "the GOLD loss needs 'topk_student_ids' in the batch (teacher top-k ids mapped to "
            "student ids); collate with CrossTokenizerCollate(..., vocab_map=True)"
        )
    labels, kd_mask = batch["labels"], batch["kd_mask"]
    ce_mask = labels != -100
    sel = ce_mask | kd_mask  # positions either term reads: one logits pass serves both
    project = _project(weight, bias, softcap)
    xs = x[sel]
    ys, ce_m, kd_m = labels[sel], ce_mask[sel], kd_mask[sel]
    lp, tl = batch["topk_logprobs"][sel], batch["tail_logmass"][sel]
    sids = batch["topk_student_ids"][sel] if method == "gold" else torch.zeros_like(ys)
    want_ce = alpha > 0
    want_kd = alpha < 1

    def per_position(xc, yc, cm, km, lpc, tlc, sc):
        z = project(xc).float()
        with torch.set_grad_enabled(torch.is_grad_enabled() and want_ce):
            ce = F.cross_entropy(z, yc.clamp(min=0).long(), reduction="none")
        if not want_kd:
            return ce * cm, torch.zeros_like(ce)
        if method == "uld":
            kd = uld(z, lpc, tlc, temperature=temperature, vocab_size=vocab_size)
        else:
            kd = gold(z, sc, lpc, tlc, temperature=temperature, vocab_size=vocab_size)
        return ce * cm, kd * km

    ce_v, kd_v = _chunked(per_position, chunk_size, xs.shape[0], xs, ys, ce_m, kd_m, lp, tl, sids)
    n_ce, n_kd = ce_m.sum(), kd_m.sum()
    ce = ce_v.sum() / n_ce.clamp(min=1)
    kd = kd_v.sum() / n_kd.clamp(min=1) * temperature**2
    if alpha == 1:
        loss = ce
    elif alpha == 0:
        loss = kd
    else:
        loss = (1.0 - alpha) * kd + alpha * ce
    if xs.shape[0] == 0:  # nothing to learn from: a zero that keeps the graph connected
        loss = x.sum() * 0.0
    metrics = {
        "loss": loss.detach(),
        "kd": kd.detach(),
        "ce": ce.detach(),
        "tokens": n_ce.detach().cpu(),
        "kd_tokens": n_kd.detach().cpu(),
    }
    return loss, metrics


def cross_tokenizer_loss(
    student_logits: torch.Tensor,
    batch: Mapping[str, torch.Tensor],
    *,
    method: str = "uld",
    temperature: float = 1.0,
    alpha: float = 0.5,
    chunk_size: int | None = None,
    vocab_size: int | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """``(1 - alpha) * T^2 * KD + alpha * CE`` and detached metrics.

    ``student_logits [B, S, V_student]``; ``batch`` from
    :class:`logitcache.crosstok.CrossTokenizerCollate`: CE on the student's own next tokens
    (``labels != -100``), KD (``method`` uld | gold) at the aligned positions (``kd_mask``).
    ``vocab_size`` is the teacher's V (``manifest.vocab_size``), for the tempered tail.
    """
    return _loss(
        student_logits,
        batch,
        method=method,
        temperature=temperature,
        alpha=alpha,
        chunk_size=chunk_size,
        vocab_size=vocab_size,
    )


def cross_tokenizer_loss_from_hidden(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    batch: Mapping[str, torch.Tensor],
    *,
    bias: torch.Tensor | None = None,
    method: str = "uld",
    temperature: float = 1.0,
    alpha: float = 0.5,
    chunk_size: int | None = None,
    vocab_size: int | None = None,
    softcap: float | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """As :func:`cross_tokenizer_loss`, from the last hidden states ``[B, S, H]`` and the
    output layer ``weight [V, H]`` (``+ bias``, then the ``softcap`` ``c * tanh(z / c)`` if
    given): logits exist for ``chunk_size`` positions at a time (default: about the fused
    loss's logit budget per chunk, :func:`logitcache.losses.fused.default_chunk_size`)."""
    if chunk_size is None:
        from logitcache.losses.fused import default_chunk_size

        chunk_size = default_chunk_size(weight.shape[0], hidden.device)
    return _loss(
        hidden,
        batch,
        method=method,
        temperature=temperature,
        alpha=alpha,
        chunk_size=chunk_size,
        vocab_size=vocab_size,
        weight=weight,
        bias=bias,
        softcap=softcap,
    )
