"""Ray Train with a cache: each sample once per epoch across ``TorchTrainer`` workers.

Two Ray Train defaults work against exactly-once epochs, and both are handled here:

- Ray Train's default ``DataConfig`` splits datasets with ``streaming_split(equal=True)``, which
  drops rows to give every worker the same count. :class:`ExactlyOnceDataConfig` splits with
  ``equal=False``: no row is dropped, workers get slightly different counts.
- Workers with fewer rows would leave DDP's all-reduce waiting. :func:`iter_distill_batches`
  agrees across workers, every step, whether anyone still has data (one tiny all-reduce); a
  worker that ran out steps on a zero-loss filler batch until all are done.

pipelines/ray_train_distill.py is a complete example.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from ray.train import DataConfig

from logitcache.data import collate


class ExactlyOnceDataConfig(DataConfig):
    """``DataConfig`` whose split of the training datasets drops no rows."""

    def configure(self, datasets, world_size, worker_handles, worker_node_ids, **kwargs):
        output = [{} for _ in range(world_size)]
        split = set(datasets) if self._datasets_to_split == "all" else set(self._datasets_to_split)
        hints = worker_node_ids if self._enable_shard_locality else None
        for name, ds in datasets.items():
            ds = ds.copy(ds)
            ds.context.execution_options = self._resolve_execution_options(name)
            if name in split:
                for i, it in enumerate(
                    ds.streaming_split(world_size, equal=False, locality_hints=hints)
                ):
                    output[i][name] = it
            else:
                for i in range(world_size):
                    output[i][name] = ds.iterator()
        return output


def _samples(batch: dict[str, np.ndarray]) -> list[dict[str, Any]]:
    n = len(batch["sample_id"])
    return [{key: col[i] for key, col in batch.items()} for i in range(n)]


def filler_batch(top_k: int, rs_samples: int = 0) -> dict[str, Any]:
    """One position, no target: zero loss and zero tokens."""
    sample = {
        "sample_id": "",
        "input_ids": np.zeros(1, np.int32),
        "loss_mask": np.zeros(1, bool),
        "topk_ids": np.zeros((1, top_k), np.int32),
        "topk_logprobs": np.zeros((1, top_k), np.float32),
        "tail_logmass": np.zeros(1, np.float32),
    }
    if rs_samples:
        sample["rs_ids"] = np.zeros((1, 1), np.int32)
        sample["rs_counts"] = np.zeros((1, 1), np.int32)
    out = collate([sample], rs_samples=rs_samples or None)
    out["sample_id"] = []
    return out


def iter_distill_batches(
    shard, *, batch_size: int, top_k: int, rs_samples: int = 0, pad_id: int = 0
) -> Iterator[dict[str, Any]]:
    """One epoch of collated batches from a Ray Train dataset shard, padded with fillers so
    every worker yields the same number of batches (``torch.distributed`` must be up)."""
    import torch.distributed as dist

    it = iter(shard.iter_batches(batch_size=batch_size, batch_format="numpy"))
    filler = filler_batch(top_k, rs_samples)
    while True:
        batch = next(it, None)
        more = torch.tensor([0 if batch is None else 1])
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(more, op=dist.ReduceOp.MAX)  # does any worker still have data?
        if not int(more):
            return
        if batch is None:
            yield dict(filler)
            continue
        samples = _samples(batch)
        out = collate(samples, pad_id=pad_id, rs_samples=rs_samples or None)
        out["sample_id"] = [str(s["sample_id"]) for s in samples]
        yield out
