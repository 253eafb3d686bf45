"""``compute_loss``: from a collated batch and student logits to one scalar.

The batch is what :func:`logitcache.data.collate` returns; ``labels == -100`` marks positions
that are not training targets (prompt tokens, padding, the last position of a row), and only
the remaining positions are gathered out of the ``[B, T, V]`` logits before any loss math.
With ``chunk_size`` set, positions are processed in chunks under activation checkpointing, so
the float32 working copies of the logits exist for one chunk at a time, in the backward pass
too.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch
from torch.utils.checkpoint import checkpoint

from logitcache.errors import ConfigError
from logitcache.losses import divergences as D
from logitcache.losses.config import LOSS_IMPLS, LOSSES, LossConfig, LossKind

__all__ = ["LOSSES", "LOSS_IMPLS", "LossConfig", "LossKind", "compute_loss"]


def _kd_fn(cfg: LossConfig, vocab_size: int | None) -> Callable[..., torch.Tensor]:
    t = cfg.temperature
    if cfg.kind == "kl_tail":
        return lambda z, i, lp, tl: D.kl_tail(z, i, lp, tl, temperature=t, vocab_size=vocab_size)
    if cfg.kind == "kl_topk":
        return lambda z, i, lp, tl: D.kl_topk(z, i, lp, tl, temperature=t)
    if cfg.kind == "reverse_kl":
        return lambda z, i, lp, tl: D.reverse_kl(z, i, lp, tl, temperature=t, vocab_size=vocab_size)
    if cfg.kind == "jsd":
        return lambda z, i, lp, tl: D.jsd(
            z, i, lp, tl, beta=cfg.beta, temperature=t, vocab_size=vocab_size
        )
    if cfg.kind == "rs_kd":
        return D.rs_kd
    raise ConfigError(f"loss {cfg.kind!r} has no KD term")


def _targets(batch: Mapping[str, torch.Tensor], cfg: LossConfig, mask: torch.Tensor):
    """The cached targets the loss reads, at the selected positions."""
    needs = cfg.spec.needs
    if needs == "topk":
        if "topk_ids" not in batch or batch["topk_ids"].shape[-1] == 0:
            raise ConfigError(
                f"loss {cfg.kind!r} needs top-k targets but this cache stores none (built with "
                "--top-k 0); use --loss rs_kd, or rebuild the cache with --top-k K"
            )
        return (batch["topk_ids"][mask], batch["topk_logprobs"][mask], batch["tail_logmass"][mask])
    if needs == "rs":
        if "rs_ids" not in batch:
            raise ConfigError(
                "loss 'rs_kd' needs sampled draws but this cache has none; rebuild with "
                "--rs-samples N, or use --loss kl_tail"
            )
        return (batch["rs_ids"][mask], batch["rs_weights"][mask])
    return ()


def _per_position(fn, chunk_size: int | None, logits: torch.Tensor, *targets) -> torch.Tensor:
    n = logits.shape[0]
    if chunk_size is None or n <= chunk_size:
        return fn(logits, *targets)
    parts = []
    for start in range(0, n, chunk_size):
        sl = slice(start, start + chunk_size)
        args = (logits[sl], *(t[sl] for t in targets))
        if torch.is_grad_enabled() and logits.requires_grad:
            # recompute this chunk's float32 copies in backward instead of keeping them all
            parts.append(checkpoint(fn, *args, use_reentrant=False))
        else:
            parts.append(fn(*args))
    return torch.cat(parts)


def compute_loss(
    student_logits: torch.Tensor,
    batch: Mapping[str, torch.Tensor],
    cfg: LossConfig,
    *,
    vocab_size: int | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Mean loss over target positions, and detached metrics (tensors: no device sync here).

    ``student_logits`` is ``[B, T, V]`` (or ``[N, V]`` with ``[N]``-shaped batch entries).
    ``vocab_size`` is the teacher's V (``manifest.vocab_size``), needed to temper the tail
    bucket; it defaults to the logits width. Metrics: ``loss``, ``kd``, ``ce``, ``tokens``.
    """
    labels = batch["labels"]
    if student_logits.shape[:-1] != labels.shape:
        raise ConfigError(
            f"student logits {tuple(student_logits.shape)} do not match labels "
            f"{tuple(labels.shape)}; pass logits for every input position"
        )
    mask = labels != -100
    logits = student_logits[mask]  # [N, V]: only target positions enter the loss math
    targets = _targets(batch, cfg, mask)
    n = logits.shape[0]
    if n == 0:  # nothing to learn from: a zero that keeps the graph connected, never NaN
        zero = student_logits.sum() * 0.0
        return zero, {
            "loss": zero.detach(),
            "kd": zero.detach(),
            "ce": zero.detach(),
            "tokens": torch.zeros((), dtype=torch.long),
        }

    y = labels[mask]
    want_ce = cfg.kind == "ce" or cfg.alpha > 0
    with torch.set_grad_enabled(torch.is_grad_enabled() and want_ce):
        ce = _per_position(D.cross_entropy, cfg.chunk_size, logits, y).mean()
    if cfg.kind == "ce":
        kd = torch.zeros((), device=logits.device)
        loss = ce
    else:
        kd = _per_position(_kd_fn(cfg, vocab_size), cfg.chunk_size, logits, *targets).mean()
        if cfg.spec.tempered:
            kd = kd * cfg.temperature**2
        loss = kd if cfg.alpha == 0 else (1.0 - cfg.alpha) * kd + cfg.alpha * ce
    metrics = {
        "loss": loss.detach(),
        "kd": kd.detach(),
        "ce": ce.detach(),
        "tokens": torch.tensor(n, dtype=torch.long),
    }
    return loss, metrics
