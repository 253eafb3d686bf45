"""``RankBatches``: one rank's batches of a cache for a trainer that runs the same number of
steps on every rank.

Why not hand ``CacheDataset`` to the trainer's own DataLoader: accelerate (under
``transformers.Trainer``) by default *dispatches* an IterableDataset's batches from the main
process, while ``CacheDataset`` already partitions by rank itself, so the two together lose or
repeat samples. Here the rank's share is read by a ``StatefulDataLoader`` that the trainer never
passes to ``accelerator.prepare``.

Ranks hold different numbers of samples (work is split by row group), and DDP hangs when one
rank stops before the others. Instead of dropping samples (``drop_uneven``), every rank yields
its own batches and then *filler* batches (one position, no target, so zero loss and zero
tokens) until all ranks have yielded ``batches_in_epoch(epoch)`` batches, a multiple of the
gradient-accumulation steps. Each sample is thus seen exactly once per epoch, every epoch ends on
an optimizer step, and the count is computed from metadata (no data read).

The state (:meth:`state_dict`) is the epoch, the batches yielded in it and the loader's own
state, so a resumed run yields exactly the batches not yet seen.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from functools import partial
from typing import Any

import numpy as np
import torch

from logitcache.data import CacheDataset, collate
from logitcache.errors import ConfigError, LoaderStateError

STATE_VERSION = 1


class RankBatches:
    """Iterable of collated batches: this rank's share of one epoch, then fillers.

    Each ``iter()`` runs one epoch and advances to the next; the trainer's own ``set_epoch`` is
    ignored (:attr:`epoch` continues across a resume, where the trainer's counter restarts).
    Batches carry ``sample_id`` (a list of str, empty in fillers) besides the tensors of
    :func:`logitcache.data.collate`.
    """

    def __init__(
        self,
        dataset: CacheDataset,
        *,
        batch_size: int,
        num_workers: int = 0,
        grad_accum: int = 1,
        pin_memory: bool = False,
        collate_fn=None,
    ):
        """``collate_fn`` replaces :func:`collate_with_ids` (it must add ``sample_id`` too),
        e.g. a ``CrossTokenizerCollate(..., sample_ids=True)`` for a student with its own
        tokenizer; fillers are collated by it as well."""
        if batch_size < 1 or grad_accum < 1 or num_workers < 0:
            raise ConfigError(
                f"batch_size={batch_size} and grad_accum={grad_accum} must be >= 1, "
                f"num_workers={num_workers} >= 0"
            )
        self.dataset = dataset
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.grad_accum = grad_accum
        self.pin_memory = pin_memory
        self.epoch = 0
        self._yielded = 0
        self._loader = None
        self._pending: dict[str, Any] | None = None
        self.collate_fn = collate_fn
        self._filler = _filler_batch(dataset.manifest, collate_fn)

    # -- counts ---------------------------------------------------------------------------
    def rank_batches(self, epoch: int) -> list[int]:
        """Real batches of each rank in ``epoch`` (DataLoader workers batch separately)."""
        nw = max(1, self.num_workers)
        counts = self.dataset.worker_samples(self.num_workers, epoch)
        per_worker = [math.ceil(n / self.batch_size) for n in counts]
        return [sum(per_worker[r * nw : (r + 1) * nw]) for r in range(self.dataset.world_size)]

    def batches_in_epoch(self, epoch: int) -> int:
        """Batches every rank yields in ``epoch``: the largest rank's, rounded up to a whole
        number of optimizer steps."""
        most = max(self.rank_batches(epoch))
        return max(1, math.ceil(most / self.grad_accum)) * self.grad_accum

    def steps_in_epochs(self, epochs: int) -> int:
        """Optimizer steps of ``epochs`` whole epochs from epoch 0."""
        return sum(self.batches_in_epoch(e) for e in range(epochs)) // self.grad_accum

    # -- iteration ------------------------------------------------------------------------
    def set_epoch(self, epoch: int) -> None:
        """Ignored: the epoch follows this object's own count (see the class docstring)."""

    def _make_loader(self):
        from torchdata.stateful_dataloader import StatefulDataLoader

        m = self.dataset.manifest
        pad = m.tokenizer.get("pad_token_id")
        return StatefulDataLoader(
            self.dataset,
            batch_size=self.batch_size,
            num_workers=self.num_workers,
            collate_fn=self.collate_fn
            or partial(
                collate_with_ids, pad_id=0 if pad is None else int(pad), rs_samples=m.rs_samples
            ),
            pin_memory=self.pin_memory,
        )

    def __iter__(self) -> Iterator[dict[str, Any]]:
        epoch = self.epoch
        total = self.batches_in_epoch(epoch)
        self.dataset.set_epoch(epoch)
        loader = self._make_loader()
        start = 0
        if self._pending is not None:
            pending, self._pending = self._pending, None
            start = int(pending["yielded"])
            if pending["loader"] is not None:
                loader.load_state_dict(pending["loader"])
        self._loader, self._yielded = loader, start
        return self._run(loader, epoch, total, start)

    def _run(self, loader, epoch: int, total: int, start: int) -> Iterator[dict[str, Any]]:
        done = start
        real = self.rank_batches(epoch)[self.dataset.rank]
        if done < real:
            for batch in loader:
                done += 1
                self._yielded = done
                yield batch
        while done < total:
            done += 1
            self._yielded = done
            yield dict(self._filler)
        self.epoch = epoch + 1
        self._yielded, self._loader = 0, None

    # -- resume ---------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            "version": STATE_VERSION,
            "epoch": self.epoch,
            "yielded": self._yielded,
            "rank": self.dataset.rank,
            "world_size": self.dataset.world_size,
            "batch_size": self.batch_size,
            "num_workers": self.num_workers,
            "grad_accum": self.grad_accum,
            "loader": self._loader.state_dict() if self._loader is not None else None,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """The next ``iter()`` continues the saved epoch with exactly the unseen batches."""
        if not isinstance(state, dict) or state.get("version") != STATE_VERSION:
            raise LoaderStateError(
                "trainer loader state has an unknown version; it was saved by another "
                "logitcache version. Resume without it (the epoch restarts)."
            )
        for key in ("rank", "world_size", "batch_size", "num_workers", "grad_accum"):
            have = {
                "rank": self.dataset.rank,
                "world_size": self.dataset.world_size,
                "batch_size": self.batch_size,
                "num_workers": self.num_workers,
                "grad_accum": self.grad_accum,
            }[key]
            if state[key] != have:
                raise LoaderStateError(
                    f"cannot resume: the checkpoint's loader was saved with {key}={state[key]}, "
                    f"this run has {key}={have}. Resume with the same processes, batch size, "
                    "dataloader workers and gradient accumulation."
                )
        self.epoch = int(state["epoch"])
        self._pending = dict(state) if state["yielded"] or state["loader"] else None


def collate_with_ids(samples, pad_id: int = 0, rs_samples: int = 0) -> dict[str, Any]:
    """:func:`logitcache.data.collate` plus the batch's ``sample_id`` list."""
    batch = collate(samples, pad_id=pad_id, rs_samples=rs_samples or None)
    batch["sample_id"] = [str(s["sample_id"]) for s in samples]
    return batch


def _filler_batch(manifest, collate_fn=None) -> dict[str, Any]:
    """One position with no target: zero loss, zero tokens, finite values everywhere."""
    k = manifest.top_k
    pad = manifest.tokenizer.get("pad_token_id")
    sample = {
        "sample_id": "",
        "input_ids": np.zeros(1, np.int32) + (int(pad) if pad is not None else 0),
        "loss_mask": np.zeros(1, bool),
        "topk_ids": np.zeros((1, k), np.int32),
        "topk_logprobs": np.zeros((1, k), np.float32),
        "tail_logmass": np.zeros(1, np.float32),
    }
    if manifest.rs_samples:
        sample["rs_ids"] = np.zeros((1, 1), np.int32)
        sample["rs_counts"] = np.zeros((1, 1), np.int32)
    if collate_fn is not None:
        batch = collate_fn([sample])
    else:
        batch = collate([sample], rs_samples=manifest.rs_samples or None)
    batch["sample_id"] = []
    return {key: v.clone() if isinstance(v, torch.Tensor) else v for key, v in batch.items()}
