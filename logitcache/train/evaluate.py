"""Held-out evaluation: cross-entropy on the true tokens, KL(teacher || student) over the
cached top-k + tail buckets, top-1 agreement with the teacher, and the student's readiness as
a speculative-decoding drafter: the acceptance rate alpha = E[sum_v min(p_v, q_v)], bounded
from the cache's top-k + tail (the lower bound never overstates it; the upper adds at most the
teacher's tail mass), and the tokens per draft round that the lower bound implies."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import torch

from logitcache.losses.acceptance import expected_tokens_per_round
from logitcache.train.distributed import all_reduce_sum
from logitcache.train.objective import StudentObjective


def teacher_argmax(batch: Mapping[str, torch.Tensor], mask: torch.Tensor) -> torch.Tensor:
    """The teacher's most likely id per selected position (codecs may store top-k unsorted)."""
    if batch["topk_ids"].shape[-1] > 0:
        ids, lp = batch["topk_ids"][mask], batch["topk_logprobs"][mask]
        return ids.gather(-1, lp.argmax(-1, keepdim=True)).squeeze(-1)
    ids, w = batch["rs_ids"][mask], batch["rs_weights"][mask]  # RS-only cache: the modal draw
    return ids.gather(-1, w.argmax(-1, keepdim=True)).squeeze(-1)


@torch.no_grad()
def evaluate(
    objective: StudentObjective,
    batches: Iterable[Mapping[str, torch.Tensor]],
    *,
    device: torch.device,
    max_batches: int | None = None,
    autocast: bool = False,
) -> dict[str, float]:
    """Token-weighted means over the held-out batches, summed across ranks. With the fused
    objective no [B, T, V] logits are built here either."""
    model = objective.model
    was_training = model.training
    model.eval()
    # tokens, ce, kl (or rs cross-entropy), top-1 hits, acceptance lower / upper bound sums
    sums = [0.0] * 6
    has_topk = True
    for i, batch in enumerate(batches):
        if max_batches is not None and i >= max_batches:
            break
        batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
        mask = batch["labels"] != -100
        if not mask.any():
            continue
        has_topk = batch["topk_ids"].shape[-1] > 0
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
            if has_topk:
                # no tail bucket (and no bounds) when the top-k spans the whole vocabulary
                with_tail = batch["topk_ids"].shape[-1] < objective.vocab_size
                rows = objective.position_metrics(batch, "kl_tail", alpha=with_tail)
            else:
                rows = objective.position_metrics(batch, "rs_kd")
        sums[0] += int(mask.sum())
        sums[1] += rows["ce"].sum().item()
        sums[2] += rows["kd"].sum().item()
        sums[3] += (rows["argmax"] == teacher_argmax(batch, mask)).sum().item()
        if "alpha_lower" in rows:
            sums[4] += rows["alpha_lower"].sum().item()
            sums[5] += rows["alpha_upper"].sum().item()
    n, ce, kd, hits, a_lo, a_hi = all_reduce_sum(sums, device)
    model.train(was_training)
    if n == 0:
        return {"eval_tokens": 0}
    out = {"eval_tokens": int(n), "eval_ce": ce / n, "eval_top1": hits / n}
    # without top-k targets the KL is not available; report the RS cross-entropy instead
    out["eval_kl" if has_topk else "eval_rs_ce"] = kd / n
    if a_hi > 0:  # bounds need top-k + a tail bucket; RS-only caches do not give them
        out["eval_alpha_lower"], out["eval_alpha_upper"] = a_lo / n, a_hi / n
        out["eval_tokens_per_round_g4"] = expected_tokens_per_round(min(a_lo / n, 1.0), 4)
    return out
