"""Streaming cached teacher targets into training.

- :class:`CacheDataset`: torch ``IterableDataset``; exactly once per epoch over ranks x
  DataLoader workers, deterministic shuffle by (seed, epoch), resumable mid-epoch.
- :func:`collate` / :func:`make_dataloader`: padded tensors for the losses in
  :mod:`logitcache.losses`, through torchdata's ``StatefulDataLoader``.
- :func:`ray_dataset`: the same samples as a Ray Dataset (for Ray Train).

docs/loading.md is the guide.
"""

from logitcache.data.collate import IGNORE_INDEX, PAD_TAIL_LOGMASS, collate, make_dataloader
from logitcache.data.dataset import CacheDataset, LoaderConfig
from logitcache.data.ray_data import ray_dataset
from logitcache.data.split import heldout_score, split_mask

__all__ = [
    "IGNORE_INDEX",
    "PAD_TAIL_LOGMASS",
    "CacheDataset",
    "LoaderConfig",
    "collate",
    "heldout_score",
    "make_dataloader",
    "ray_dataset",
    "split_mask",
]
