""":class:`CacheDataset`: stream a cache's samples into PyTorch, exactly once per epoch.

Partitioning, shuffling and resumption are decided from metadata (row counts, and sample ids
for the held-out split) read once in the constructor; see :mod:`logitcache.data.plan`.
Each DataLoader worker then reads only its own row groups, a bounded number ahead, and emits
them through a deterministic bounded shuffle buffer.

Resumption follows torchdata's ``StatefulDataLoader`` protocol: it calls ``state_dict()`` on the
dataset copy inside each worker after each batch, and ``load_state_dict()`` on that worker's
copy before iterating again. The state is tiny (the epoch and how far into this worker's
emission order it got) and versioned; it is refused under a different cache, layout or order.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, fields
from typing import Any

import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info

from logitcache.data.disk_cache import ShardDiskCache
from logitcache.data.plan import WorkUnit, assign_units, emission_order, epoch_rng, split_units
from logitcache.data.reader import Prefetcher, UnitJob, UnitReader, UnitResult, open_shard
from logitcache.data.split import SPLITS, split_mask
from logitcache.errors import ConfigError, CorruptShardError, LoaderStateError
from logitcache.format import Cache, ShardInfo, open_cache
from logitcache.storage import Store

log = logging.getLogger(__name__)
STATE_VERSION = 1
# Options whose change alters the emission order; a resume state must match them.
PINNED_UNITS = 2  # decoded row groups a shuffle buffer may keep alive besides the newest
_ORDER_OPTIONS = ("seed", "shuffle", "shuffle_buffer", "split", "heldout_fraction", "drop_uneven")


@dataclass(kw_only=True)
class LoaderConfig:
    """How :class:`CacheDataset` splits, orders and reads a cache.

    ``shuffle_buffer`` is in samples and costs memory: each held sample is about
    ``seq_len * (8 * k + 10)`` bytes decoded (k=64, 2048 positions: ~1 MiB).
    ``drop_uneven`` makes every (rank, worker) yield the same number of samples (the smallest
    share; the rest of each share is dropped for this epoch) so DDP ranks run the same number of
    steps. ``prefetch`` is the number of work units (row groups) read ahead per worker.
    """

    split: str = "all"
    heldout_fraction: float = 0.05
    seed: int = 0
    shuffle: bool = True
    shuffle_buffer: int = 128
    rank: int | None = None
    world_size: int | None = None
    drop_uneven: bool = False
    skip_bad_shards: bool = False
    local_cache_dir: str | None = None
    local_cache_bytes: int = 16 * 2**30
    prefetch: int = 2
    metadata_threads: int = 8

    def __post_init__(self) -> None:
        if self.split not in SPLITS:
            raise ConfigError(f"split must be one of {', '.join(SPLITS)}; got {self.split!r}")
        if not 0.0 <= self.heldout_fraction < 1.0:
            raise ConfigError(
                f"heldout_fraction must be in [0, 1), got {self.heldout_fraction}; e.g. 0.05"
            )
        if self.split == "heldout" and self.heldout_fraction == 0.0:
            raise ConfigError(
                "split='heldout' with heldout_fraction=0 is empty; raise the fraction"
            )
        if self.shuffle_buffer < 0:
            raise ConfigError(f"shuffle_buffer must be >= 0 samples, got {self.shuffle_buffer}")
        if self.prefetch < 0:
            raise ConfigError(
                f"prefetch must be >= 0 units (0 = no read-ahead), got {self.prefetch}"
            )
        if self.metadata_threads < 1:
            raise ConfigError(f"metadata_threads must be >= 1, got {self.metadata_threads}")
        if (self.rank is None) != (self.world_size is None):
            raise ConfigError("pass rank and world_size together, or neither (torch.distributed)")
        if self.world_size is not None and not 0 <= self.rank < self.world_size:
            raise ConfigError(
                f"rank {self.rank} must be in [0, world_size={self.world_size}); check the launcher"
            )


def _distributed_layout() -> tuple[int, int]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


@dataclass
class _ShardMeta:
    index: int  # position in the manifest's shard list
    group_rows: list[int]
    keep: np.ndarray | None  # rows of the requested split; None = all rows

    def rows_of(self, unit: WorkUnit) -> np.ndarray:
        start = sum(self.group_rows[: unit.row_group])
        if self.keep is None:
            return np.arange(unit.rows)
        return np.flatnonzero(self.keep[start + unit.start : start + unit.stop])


class CacheDataset(IterableDataset):
    """A torch ``IterableDataset`` of a cache's samples (dicts of numpy arrays).

    Every sample of the split is yielded exactly once per epoch across all ranks and
    DataLoader workers (up to ``drop_uneven``). Call :meth:`set_epoch` before each epoch.
    Options are the fields of :class:`LoaderConfig`.
    """

    def __init__(
        self,
        uri: str,
        *,
        storage_options: str | dict[str, Any] | None = None,
        config: LoaderConfig | None = None,
        **options: Any,
    ):
        super().__init__()
        if config is not None and options:
            raise ConfigError("pass either config=LoaderConfig(...) or keyword options, not both")
        if config is None:
            known = {f.name for f in fields(LoaderConfig)}
            unknown = sorted(set(options) - known)
            if unknown:
                raise ConfigError(
                    f"unknown CacheDataset option(s) {unknown}; choose from {sorted(known)}"
                )
            config = LoaderConfig(**options)
        self.config = config
        self.uri = uri
        self._storage_options = storage_options
        self.cache: Cache = open_cache(uri, storage_options)
        self._pid = os.getpid()
        if config.rank is None:
            self.rank, self.world_size = _distributed_layout()
        else:
            self.rank, self.world_size = config.rank, config.world_size
        self.epoch = 0
        self._disk_cache = (
            ShardDiskCache(config.local_cache_dir, config.local_cache_bytes)
            if config.local_cache_dir
            else None
        )
        self._meta = self._read_metadata()
        self._fingerprint = hashlib.sha256(
            "\n".join(f"{s.path}:{s.sha256}" for s in self.cache.shards).encode()
        ).hexdigest()[:16]
        self._position = 0
        self._order_len = 1  # length of the current pass's emission order (set by __iter__)
        self._pass_epoch = 0  # epoch of the current pass
        self._resume: dict[str, Any] | None = None
        self._units_cache: dict[int, list[WorkUnit]] = {}

    # -- metadata --------------------------------------------------------------------------
    def _read_metadata(self) -> list[_ShardMeta]:
        """Row-group sizes (footers) and, for a split, which rows belong to it."""
        cfg = self.config

        def one(item: tuple[int, ShardInfo]) -> _ShardMeta | CorruptShardError:
            i, shard = item
            try:
                pf = open_shard(self.cache, shard)  # footer reads only: no whole-file download
                rows = [pf.metadata.row_group(g).num_rows for g in range(pf.num_row_groups)]
                keep = None
                if cfg.split != "all":
                    ids = pf.read(columns=["sample_id"]).column("sample_id").to_pylist()
                    keep = split_mask(ids, cfg.split, cfg.heldout_fraction)
                return _ShardMeta(i, rows, keep)
            except CorruptShardError as exc:
                return exc

        shards = list(enumerate(self.cache.shards))
        with ThreadPoolExecutor(max_workers=min(cfg.metadata_threads, max(1, len(shards)))) as ex:
            results = list(ex.map(one, shards))
        metas = []
        for result in results:
            if isinstance(result, CorruptShardError):
                if not cfg.skip_bad_shards:
                    raise result
                log.warning("skipping bad shard: %s", result)
                continue
            metas.append(result)
        return metas

    def _units(self, world: int) -> list[WorkUnit]:
        if world not in self._units_cache:
            groups = [
                (m.index, g, n) for m in self._meta for g, n in enumerate(m.group_rows) if n > 0
            ]
            self._units_cache[world] = split_units(groups, world)
        return self._units_cache[world]

    def _worker_plan(self, epoch: int, global_worker: int, world: int):
        units = self._units(world)
        mine = assign_units(
            units,
            seed=self.config.seed,
            epoch=epoch,
            shuffle=self.config.shuffle,
            global_worker=global_worker,
            world=world,
        )
        metas = {m.index: m for m in self._meta}
        plan = [units[i] for i in mine]
        rows = [metas[u.shard].rows_of(u) for u in plan]
        return plan, rows

    def _share(self, epoch: int, world: int) -> int | None:
        """With ``drop_uneven``: the number of samples every global worker yields."""
        if not self.config.drop_uneven:
            return None
        return min(sum(len(r) for r in self._worker_plan(epoch, g, world)[1]) for g in range(world))

    # -- public API --------------------------------------------------------------------------
    @property
    def manifest(self):
        return self.cache.manifest

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose order the next iteration follows (new shuffle per epoch)."""
        if epoch < 0:
            raise ConfigError(f"epoch must be >= 0, got {epoch}")
        if epoch != self.epoch:
            self._position, self._order_len = 0, 1
            self._resume = None  # a saved state belongs to the epoch it was saved in
        self.epoch = self._pass_epoch = int(epoch)

    def num_samples(self, num_workers: int = 0) -> int:
        """Samples this rank yields per epoch with ``num_workers`` DataLoader workers."""
        nw = max(1, num_workers)
        world = self.world_size * nw
        share = self._share(self.epoch, world)
        total = 0
        for w in range(nw):
            n = sum(len(r) for r in self._worker_plan(self.epoch, self.rank * nw + w, world)[1])
            total += n if share is None else min(n, share)
        return total

    def worker_samples(self, num_workers: int = 0, epoch: int | None = None) -> list[int]:
        """Samples each global worker (``rank * num_workers + worker``, all ranks) yields in
        ``epoch`` (default: the current one), from metadata alone. A trainer uses it to give
        every rank the same number of steps without dropping samples."""
        nw = max(1, num_workers)
        world = self.world_size * nw
        ep = self.epoch if epoch is None else int(epoch)
        share = self._share(ep, world)
        counts = [sum(len(r) for r in self._worker_plan(ep, g, world)[1]) for g in range(world)]
        return counts if share is None else [min(n, share) for n in counts]

    def _layout(self) -> tuple[int, int]:
        info = get_worker_info()
        return (0, 1) if info is None else (info.id, info.num_workers)

    def state_dict(self) -> dict[str, Any]:
        worker_id, num_workers = self._layout()
        return {
            "version": STATE_VERSION,
            "cache": self._fingerprint,
            "epoch": self._pass_epoch,
            "position": self._position,
            "finished": self._position >= self._order_len,
            "rank": self.rank,
            "world_size": self.world_size,
            "worker_id": worker_id,
            "num_workers": num_workers,
            **{k: getattr(self.config, k) for k in _ORDER_OPTIONS},
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Resume mid-epoch: the next iteration yields exactly the samples not yet yielded."""
        if not isinstance(state, dict) or state.get("version") != STATE_VERSION:
            raise LoaderStateError(
                f"loader state version {state.get('version') if isinstance(state, dict) else state!r}"
                f" is not {STATE_VERSION}; it was saved by another logitcache version. Restart "
                "the epoch (do not load the loader state) to continue."
            )
        if state["cache"] != self._fingerprint:
            raise LoaderStateError(
                f"loader state was saved for a different cache (shard list {state['cache']}, "
                f"this cache {self._fingerprint}); resume with the cache of the checkpoint."
            )
        for key, have in (("world_size", self.world_size), ("rank", self.rank)):
            if state[key] != have:
                raise LoaderStateError(
                    f"cannot resume: loader state was saved with {key}={state[key]}, this run "
                    f"has {key}={have}. Resume with the same number of ranks (and each rank "
                    "with its own state), or restart the epoch without loading the loader state."
                )
        for key in _ORDER_OPTIONS:
            if state[key] != getattr(self.config, key):
                raise LoaderStateError(
                    f"cannot resume: loader state has {key}={state[key]!r}, this dataset "
                    f"{getattr(self.config, key)!r}; the sample order would differ. Use the "
                    "original setting to resume."
                )
        self._resume = dict(state)
        self._position = int(state["position"])
        if not state["finished"]:
            self.epoch = int(state["epoch"])
        # A finished state leaves self.epoch alone: the next iteration yields nothing (that
        # epoch is done) and the one after follows set_epoch, as StatefulDataLoader expects.

    # -- iteration ---------------------------------------------------------------------------
    def _reopen_after_fork(self) -> None:
        """fsspec's async filesystems (s3fs, gcsfs) cannot cross a fork: open a fresh one."""
        if os.getpid() != self._pid:
            store = Store.open(self.uri, self._storage_options)
            self.cache = Cache(store, self.cache.manifest)
            self._pid = os.getpid()

    def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
        # Not a generator itself: a pending resume state is consumed when iter() is called (as
        # StatefulDataLoader does right after load_state_dict), not at the first next().
        self._reopen_after_fork()
        worker_id, num_workers = self._layout()
        start, epoch = 0, self.epoch
        if self._resume is not None:
            resume, self._resume = self._resume, None
            if (resume["num_workers"], resume["worker_id"]) != (num_workers, worker_id):
                raise LoaderStateError(
                    f"cannot resume: loader state was saved by worker {resume['worker_id']} of "
                    f"{resume['num_workers']} DataLoader workers, this is worker {worker_id} of "
                    f"{num_workers}. Resume with num_workers={resume['num_workers']}, or restart "
                    "the epoch without loading the loader state."
                )
            start, epoch = int(resume["position"]), int(resume["epoch"])
        world = self.world_size * num_workers
        global_worker = self.rank * num_workers + worker_id
        plan, rows = self._worker_plan(epoch, global_worker, world)
        rng = epoch_rng(self.config.seed, epoch, global_worker, 1)
        order = emission_order(
            rows, buffer_size=self.config.shuffle_buffer, rng=rng if self.config.shuffle else None
        )
        share = self._share(epoch, world)
        if share is not None:
            order = order[:share]
        self._pass_epoch, self._position, self._order_len = epoch, start, len(order)
        return self._emit(plan, rows, order, start)

    def _emit(self, plan, rows, order, start) -> Iterator[dict[str, np.ndarray]]:
        # Which rows of each unit are still to be yielded after `start`.
        pending: dict[int, set[int]] = {}
        for u, r in order[start:]:
            pending.setdefault(u, set()).add(r)
        jobs = [
            UnitJob(i, plan[i], np.array(sorted(pending[i]), dtype=np.int64))
            for i in range(len(plan))
            if i in pending
        ]
        if not jobs:
            return
        reader = UnitReader(self.cache, self.cache.shards, self._disk_cache)
        if self.config.prefetch > 0:
            source = Prefetcher(reader, jobs, self.config.prefetch)
            results, close = iter(source), source.close
        else:
            results, close = reader.iter(jobs), lambda: None
        held: dict[tuple[int, int], dict[str, np.ndarray]] = {}
        views: dict[int, list[tuple[int, int]]] = {}  # unit -> its keys, oldest unit first
        failed: set[int] = set()
        loaded = -1
        warned: set[str] = set()
        try:
            for pos in range(start, len(order)):
                key = order[pos]
                u = key[0]
                while u > loaded:
                    result: UnitResult = next(results)
                    loaded = result.index
                    if result.error is not None:
                        failed.add(loaded)
                        if not self.config.skip_bad_shards:
                            raise result.error
                        if result.error.path not in warned:
                            warned.add(result.error.path)
                            log.warning("skipping bad shard: %s", result.error)
                        continue
                    # Samples are views into their row group's decoded arrays. A sample that
                    # outlives PINNED_UNITS newer units in the shuffle buffer is copied, so its
                    # row group can be freed: memory stays bounded, and few samples are copied.
                    while len(views) > PINNED_UNITS:
                        for k in views.pop(next(iter(views))):
                            if k in held:
                                held[k] = _compact(held[k])
                    keys = [(loaded, r) for r in sorted(pending[loaded])]
                    held.update(zip(keys, result.samples))
                    views[loaded] = keys
                self._position = pos + 1
                if u in failed:
                    continue
                yield held.pop(key)
        finally:
            close()


def _compact(sample: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """A copy of ``sample`` that owns its arrays (frees the row group it viewed)."""
    return {n: a.copy() if isinstance(a, np.ndarray) else a for n, a in sample.items()}
