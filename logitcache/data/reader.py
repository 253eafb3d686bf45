"""Reading work units: open shards the cheapest way for their storage, decode, read ahead.

- Local disk: pyarrow's native file reader (memory-mapped), no Python file object in between.
- Object storage: an fsspec file without its own block cache, opened with ``pre_buffer=True``
  so pyarrow fetches a row group's column chunks in a few coalesced ranged GETs.
- With a :class:`~logitcache.data.disk_cache.ShardDiskCache`, remote shards are downloaded
  whole once (sha256-verified) and then read locally.

:class:`Prefetcher` runs that reading and the decode in a background thread, a bounded number
of units ahead, so network latency and zstd/numpy work overlap with the consumer. Decoding is
mostly numpy and pyarrow calls that release the GIL.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from logitcache.data.disk_cache import ShardDiskCache
from logitcache.data.plan import WorkUnit
from logitcache.errors import CorruptShardError
from logitcache.format import Cache, ShardInfo

log = logging.getLogger(__name__)
OPEN_FILES = 4  # shards kept open per reader: units of one shard often come close together


def open_shard(
    cache: Cache, shard: ShardInfo, disk_cache: ShardDiskCache | None = None
) -> pq.ParquetFile:
    """Open a shard for row-group reads and check it against the manifest and codec."""
    store = cache.store
    try:
        if disk_cache is not None:
            pf = pq.ParquetFile(
                str(disk_cache.get(cache, shard)),
                memory_map=True,
                page_checksum_verification=True,
            )
        elif store.is_local:
            pf = pq.ParquetFile(
                store.path(shard.path), memory_map=True, page_checksum_verification=True
            )
        else:
            fh = store.open_input(shard.path, cache_type="none")
            pf = pq.ParquetFile(fh, pre_buffer=True, page_checksum_verification=True)
    except FileNotFoundError:
        raise CorruptShardError(shard.path, "file is missing") from None
    except (pa.ArrowInvalid, OSError) as exc:
        if isinstance(exc, CorruptShardError):
            raise
        raise CorruptShardError(shard.path, f"not a readable Parquet file ({exc})") from None
    if pf.metadata.num_rows != shard.rows:
        raise CorruptShardError(
            shard.path, f"{pf.metadata.num_rows} rows on disk, manifest says {shard.rows}"
        )
    if not pf.schema_arrow.equals(cache.schema):
        raise CorruptShardError(shard.path, "schema differs from the codec's columns")
    return pf


@dataclass
class UnitJob:
    """Read ``unit`` and keep ``rows`` (indices within the unit, ascending)."""

    index: int
    unit: WorkUnit
    rows: np.ndarray


@dataclass
class UnitResult:
    index: int
    samples: list[dict[str, np.ndarray]] | None
    error: CorruptShardError | None = None


class UnitReader:
    """Reads :class:`UnitJob` s in order; a shard that fails once is not retried."""

    def __init__(self, cache: Cache, shards: Sequence[ShardInfo], disk_cache=None):
        self.cache = cache
        self.shards = shards
        self.disk_cache = disk_cache
        self._open: OrderedDict[int, pq.ParquetFile] = OrderedDict()
        self._bad: dict[int, CorruptShardError] = {}

    def _file(self, shard_idx: int) -> pq.ParquetFile:
        pf = self._open.pop(shard_idx, None)
        if pf is None:
            pf = open_shard(self.cache, self.shards[shard_idx], self.disk_cache)
        self._open[shard_idx] = pf
        while len(self._open) > OPEN_FILES:
            self._open.popitem(last=False)
        return pf

    def read(self, job: UnitJob) -> UnitResult:
        u = job.unit
        if u.shard in self._bad:
            return UnitResult(job.index, None, self._bad[u.shard])
        path = self.shards[u.shard].path
        try:
            table = self._file(u.shard).read_row_group(u.row_group)
            if u.start or u.stop != table.num_rows:
                table = table.slice(u.start, u.rows)
            if len(job.rows) != u.rows:
                table = table.take(pa.array(job.rows, pa.int64()))
            samples = list(self.cache.decode(table))
        except CorruptShardError as exc:
            err = exc if exc.path != "<table>" else CorruptShardError(path, exc.problem)
        except (pa.ArrowInvalid, OSError, ValueError, IndexError) as exc:
            err = CorruptShardError(path, f"row group {u.row_group}: {exc}")
        else:
            if len(samples) != len(job.rows):
                err = CorruptShardError(path, f"row group {u.row_group} decoded short")
            else:
                return UnitResult(job.index, samples)
        self._bad[u.shard] = err
        self._open.pop(u.shard, None)
        return UnitResult(job.index, None, err)

    def iter(self, jobs: Sequence[UnitJob]) -> Iterator[UnitResult]:
        for job in jobs:
            yield self.read(job)


_DONE = object()


class Prefetcher:
    """Run a :class:`UnitReader` over ``jobs`` in a daemon thread, at most ``depth`` ahead.

    Iterate to get :class:`UnitResult` s in job order; :meth:`close` (or leaving the ``with``
    block) stops the thread promptly even mid-epoch.
    """

    def __init__(self, reader: UnitReader, jobs: Sequence[UnitJob], depth: int):
        self._queue: queue.Queue = queue.Queue(maxsize=max(1, depth))
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run, args=(reader, jobs), name="logitcache-prefetch", daemon=True
        )
        self._thread.start()

    def _put(self, item) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _run(self, reader: UnitReader, jobs: Sequence[UnitJob]) -> None:
        try:
            for job in jobs:
                if self._stop.is_set() or not self._put(reader.read(job)):
                    return
        except BaseException as exc:  # surface unexpected errors in the consumer
            self._put(exc)
            return
        self._put(_DONE)

    def __iter__(self) -> Iterator[UnitResult]:
        while True:
            item = self._queue.get()
            if item is _DONE:
                return
            if isinstance(item, BaseException):
                raise item
            yield item

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def __enter__(self) -> Prefetcher:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
