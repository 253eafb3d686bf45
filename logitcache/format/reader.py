"""Reading a cache: :func:`open_cache` and :class:`Cache`.

Only files the manifest lists are read, through paths checked to stay inside the cache root.
Nothing here unpickles anything: shards are Parquet and the manifest is JSON.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from logitcache.codecs import Codec, CodecContext, get_codec
from logitcache.errors import CacheNotFoundError, CorruptShardError
from logitcache.format.manifest import Manifest, ShardInfo
from logitcache.format.shard import decode_table, shard_schema
from logitcache.format.version import MANIFEST_NAME
from logitcache.format.writer import read_manifest
from logitcache.storage import Store

log = logging.getLogger(__name__)


def open_cache(uri: str, storage_options: str | Mapping[str, Any] | None = None) -> Cache:
    """Open the cache at ``uri`` for reading (no write access needed)."""
    store = Store.open(uri, storage_options)
    manifest = read_manifest(store)
    if manifest is None:
        bucket = store.missing_bucket()
        if bucket:
            raise CacheNotFoundError(
                f"no cache at {store.uri}: the bucket {bucket!r} does not exist. Check the URI "
                "for typos, or create the bucket first."
            )
        raise CacheNotFoundError(
            f"no cache at {store.uri}: {MANIFEST_NAME} not found. Check the URI and "
            "--storage-options, or build one with `logitcache build`."
        )
    return Cache(store, manifest)


class Cache:
    """A read-only view of one cache."""

    def __init__(self, store: Store, manifest: Manifest):
        self.store = store
        self.manifest = manifest
        self.codec: Codec = get_codec(manifest.codec["spec"])
        self.ctx = CodecContext(
            vocab_size=manifest.vocab_size,
            top_k=manifest.top_k,
            rs_samples=manifest.rs_samples,
        )
        self.schema = shard_schema(self.codec, self.ctx)

    def __repr__(self) -> str:
        m = self.manifest
        return (
            f"Cache({self.store.uri!r}, teacher={m.teacher.get('name')!r}, k={m.top_k}, "
            f"rs={m.rs_samples}, shards={len(m.shards)}, tokens={m.num_tokens})"
        )

    @property
    def shards(self) -> list[ShardInfo]:
        return list(self.manifest.shards)

    def __len__(self) -> int:
        return self.manifest.num_sequences

    # -- shard access ------------------------------------------------------------------------
    def parquet_file(self, shard: ShardInfo, **open_kwargs: Any) -> pq.ParquetFile:
        """Open a shard lazily (footer only); page checksums are verified as pages are read."""
        try:
            fh = self.store.open_input(shard.path, **open_kwargs)
            pf = pq.ParquetFile(fh, page_checksum_verification=True)
        except FileNotFoundError:
            raise CorruptShardError(shard.path, "file is missing") from None
        except (pa.ArrowInvalid, OSError) as exc:
            raise CorruptShardError(shard.path, f"not a readable Parquet file ({exc})") from None
        if pf.metadata.num_rows != shard.rows:
            raise CorruptShardError(
                shard.path, f"{pf.metadata.num_rows} rows on disk, manifest says {shard.rows}"
            )
        if not pf.schema_arrow.equals(self.schema):
            raise CorruptShardError(shard.path, "schema differs from the codec's columns")
        return pf

    def read_shard_bytes(self, shard: ShardInfo) -> bytes:
        """Whole shard, checked against the manifest's sha256."""
        try:
            data = self.store.read_bytes(shard.path)
        except FileNotFoundError:
            raise CorruptShardError(shard.path, "file is missing") from None
        digest = hashlib.sha256(data).hexdigest()
        if digest != shard.sha256:
            raise CorruptShardError(
                shard.path, f"sha256 {digest[:12]}... != manifest {shard.sha256[:12]}..."
            )
        return data

    def decode(self, table: pa.Table) -> Iterator[dict[str, np.ndarray]]:
        """Decode any slice of a shard (rows, a row group) into per-sequence dicts."""
        try:
            yield from decode_table(table, self.codec, self.ctx)
        except (pa.ArrowInvalid, ValueError, IndexError) as exc:
            raise CorruptShardError("<table>", f"cannot decode: {exc}") from None

    def iter_row_groups(
        self, shard: ShardInfo, row_groups: Iterable[int] | None = None
    ) -> Iterator[pa.Table]:
        pf = self.parquet_file(shard)
        groups = range(pf.num_row_groups) if row_groups is None else row_groups
        for g in groups:
            try:
                yield pf.read_row_group(g)
            except (pa.ArrowInvalid, OSError) as exc:
                raise CorruptShardError(shard.path, f"row group {g}: {exc}") from None

    def iter_samples(
        self,
        shards: Iterable[ShardInfo] | None = None,
        *,
        verify_checksums: bool = False,
        skip_bad_shards: bool = False,
    ) -> Iterator[dict[str, np.ndarray]]:
        """Every sequence, shard by shard in manifest order.

        ``verify_checksums`` reads each shard whole and checks its sha256 first (slower on
        remote storage); page checksums are always verified. ``skip_bad_shards`` logs a warning
        and moves on instead of raising :class:`CorruptShardError`.
        """
        for shard in self.shards if shards is None else shards:
            try:
                if verify_checksums:
                    data = self.read_shard_bytes(shard)
                    pf = pq.ParquetFile(pa.BufferReader(data), page_checksum_verification=True)
                    tables = (pf.read_row_group(g) for g in range(pf.num_row_groups))
                else:
                    tables = self.iter_row_groups(shard)
                for table in tables:
                    yield from self.decode(table)
            except CorruptShardError as exc:
                if exc.path == "<table>":
                    exc = CorruptShardError(shard.path, exc.problem)
                if not skip_bad_shards:
                    raise exc from None
                log.warning("skipping bad shard: %s", exc)
