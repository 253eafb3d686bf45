"""Batching samples into padded tensors for the losses, and a resumable DataLoader.

Padding values are chosen to be *finite and harmless* even if a loss forgets the mask:
padded positions have ``labels == -100`` and ``attention_mask == False``; their top-k ids are 0
with log-probs ``-log(k)`` (a uniform distribution over the k slots, so ``exp`` sums to 1) and
a tail log-mass of ``PAD_TAIL_LOGMASS`` (-1e4: ``exp`` is exactly 0 in float32, yet
``0 * tail`` is 0, not NaN as it would be with ``-inf``). Sampled-draw padding has weight 0.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import partial
from typing import Any

import numpy as np
import torch

from logitcache.errors import ConfigError

IGNORE_INDEX = -100
PAD_TAIL_LOGMASS = -1.0e4


def collate(
    samples: Sequence[dict[str, Any]], pad_id: int = 0, rs_samples: int | None = None
) -> dict[str, torch.Tensor]:
    """Pad a list of samples into ``[B, T, ...]`` tensors (T = longest sample).

    ``labels[b, t] = input_ids[b, t+1]`` where ``loss_mask[b, t]``, else -100: row t holds the
    teacher's distribution for token t+1, so ``labels`` and ``topk_*`` line up position by
    position with the student's logits. ``rs_weights = rs_counts / rs_samples`` (``rs_samples``
    defaults to the largest per-position count total in the batch, i.e. N).
    """
    if not samples:
        raise ConfigError("collate() needs at least one sample")
    b = len(samples)
    lengths = [len(s["input_ids"]) for s in samples]
    t_max = max(lengths)
    k = samples[0]["topk_ids"].shape[1]
    input_ids = np.full((b, t_max), pad_id, np.int64)
    attention = np.zeros((b, t_max), bool)
    labels = np.full((b, t_max), IGNORE_INDEX, np.int64)
    topk_ids = np.zeros((b, t_max, k), np.int64)
    topk_lp = np.full((b, t_max, k), -math.log(k) if k else 0.0, np.float32)
    tail = np.full((b, t_max), PAD_TAIL_LOGMASS if k else 0.0, np.float32)
    has_rs = "rs_ids" in samples[0]
    if has_rs:
        u_max = max(s["rs_ids"].shape[1] for s in samples)
        rs_ids = np.zeros((b, t_max, u_max), np.int64)
        rs_counts = np.zeros((b, t_max, u_max), np.float32)
    for i, (s, t) in enumerate(zip(samples, lengths)):
        if s["topk_ids"].shape[1] != k:
            raise ConfigError(
                f"sample {s.get('sample_id')!r} has k={s['topk_ids'].shape[1]}, the batch k={k}; "
                "do not mix caches with different top_k in one batch"
            )
        ids = s["input_ids"]
        input_ids[i, :t] = ids
        attention[i, :t] = True
        target = s["loss_mask"][: t - 1]
        labels[i, : t - 1] = np.where(target, ids[1:], IGNORE_INDEX)
        topk_ids[i, :t] = s["topk_ids"]
        topk_lp[i, :t] = s["topk_logprobs"]
        tail[i, :t] = s["tail_logmass"]
        if has_rs:
            u = s["rs_ids"].shape[1]
            rs_ids[i, :t, :u] = s["rs_ids"]
            rs_counts[i, :t, :u] = s["rs_counts"]
    out = {
        "input_ids": torch.from_numpy(input_ids),
        "attention_mask": torch.from_numpy(attention),
        "labels": torch.from_numpy(labels),
        "topk_ids": torch.from_numpy(topk_ids),
        "topk_logprobs": torch.from_numpy(topk_lp),
        "tail_logmass": torch.from_numpy(tail),
    }
    if has_rs:
        if rs_samples is None:
            totals = rs_counts.sum(axis=-1)
            rs_samples = int(totals.max()) if totals.size else 1
        if rs_samples <= 0:
            raise ConfigError(f"rs_samples must be positive, got {rs_samples}")
        out["rs_ids"] = torch.from_numpy(rs_ids)
        out["rs_weights"] = torch.from_numpy(rs_counts / np.float32(rs_samples))
    return out


def make_dataloader(
    dataset,
    batch_size: int,
    num_workers: int = 0,
    *,
    pad_id: int | None = None,
    pin_memory: bool = False,
    prefetch_factor: int | None = None,
    snapshot_every_n_steps: int = 1,
    collate_fn=None,
    **kwargs: Any,
):
    """A torchdata ``StatefulDataLoader`` over ``dataset`` with :func:`collate`.

    ``collate_fn`` replaces :func:`collate` (e.g. ``logitcache.crosstok.CrossTokenizerCollate``
    for a student with its own tokenizer).

    ``loader.state_dict()`` / ``load_state_dict()`` resume mid-epoch exactly. Workers are not
    persistent, so :meth:`CacheDataset.set_epoch` reaches them at the next epoch. ``pad_id``
    defaults to the cache's pad token (else 0).
    """
    from torchdata.stateful_dataloader import StatefulDataLoader

    if batch_size < 1:
        raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
    if num_workers < 0:
        raise ConfigError(f"num_workers must be >= 0, got {num_workers}")
    manifest = getattr(dataset, "manifest", None)
    if pad_id is None:
        pad_id = manifest.tokenizer.get("pad_token_id") if manifest is not None else None
        pad_id = 0 if pad_id is None else int(pad_id)
    rs = manifest.rs_samples if manifest is not None and manifest.rs_samples else None
    if num_workers > 0 and prefetch_factor is not None:
        kwargs["prefetch_factor"] = prefetch_factor
    return StatefulDataLoader(
        dataset,
        batch_size=batch_size,
        num_workers=num_workers,
        collate_fn=collate_fn or partial(collate, pad_id=pad_id, rs_samples=rs),
        pin_memory=pin_memory,
        snapshot_every_n_steps=snapshot_every_n_steps,
        **kwargs,
    )
