"""Resumable, exactly-once commit of shards into a cache.

Protocol (docs/format.md, "Commit protocol"):

1. Work is split by the caller into deterministic *units* (e.g. a slice of the corpus). A unit
   becomes exactly one shard.
2. :func:`write_shard` writes the shard under a fresh unique name; the bytes are durable before
   it returns (fsync + rename locally, a single PUT on object stores). Any process can call it,
   a Ray worker included.
3. :meth:`CacheWriter.commit` (one committer, the driver) adds the shard to the manifest and
   replaces the manifest atomically. Only then does the shard exist for readers.

The one committer is enforced by the cache's write lease (:mod:`logitcache.format.lease`): a
writer opened with ``lease=`` checks it before every manifest write and refuses once it is lost,
and removes a crashed run's orphans only under it (:func:`open_leased_writer`).

A crash between 2 and 3 leaves an orphan file that no reader sees; the next run deletes it and
redoes the unit. A crash anywhere else leaves the previous manifest, which is always readable.
"""

from __future__ import annotations

import hashlib
import logging
import re
import uuid
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.compute as pc

from logitcache.errors import ConfigError, IncompatibleCacheError, ManifestError
from logitcache.format.manifest import Manifest, ShardInfo
from logitcache.format.shard import table_to_parquet_bytes
from logitcache.format.version import MANIFEST_NAME, SHARD_DIR
from logitcache.storage import Store

if TYPE_CHECKING:
    from logitcache.format.lease import Lease

log = logging.getLogger(__name__)
_UNIT_RE = re.compile(r"^[A-Za-z0-9_.\-]{1,128}$")


def check_unit(unit: str) -> str:
    if not _UNIT_RE.match(unit):
        raise ConfigError(
            f"unit name {unit!r} must be 1-128 characters of letters, digits, '_', '.', '-'"
        )
    return unit


def write_shard(store: Store, unit: str, table: pa.Table) -> ShardInfo:
    """Write one shard durably under a unique name; return what the manifest will record."""
    check_unit(unit)
    data = table_to_parquet_bytes(table)
    rel = f"{SHARD_DIR}/{unit}-{uuid.uuid4().hex[:12]}.parquet"
    store.write_bytes(rel, data)
    tokens = int(pc.sum(table.column("num_tokens")).as_py() or 0)
    return ShardInfo(
        path=rel,
        unit=unit,
        rows=table.num_rows,
        tokens=tokens,
        bytes=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
    )


def read_manifest(store: Store) -> Manifest | None:
    """The committed manifest, or None when the root holds none."""
    try:
        data = store.read_bytes(MANIFEST_NAME)
    except FileNotFoundError:
        return None
    return Manifest.from_json(data, where=store.url(MANIFEST_NAME))


class CacheWriter:
    """The single committer of a cache's manifest. Create with :meth:`open`."""

    def __init__(self, store: Store, manifest: Manifest, lease: Lease | None = None):
        self.store = store
        self.manifest = manifest
        self.lease = lease

    @classmethod
    def open(
        cls,
        uri: str,
        header: Manifest,
        storage_options: str | Mapping[str, Any] | None = None,
        *,
        allow_corpus_change: bool = False,
        lease: Lease | None = None,
    ) -> CacheWriter:
        """Start a new cache at ``uri`` or resume the one there if it was built the same way."""
        store = Store.open(uri, storage_options)
        existing = read_manifest(store)
        if existing is None:
            header.shards = []
            header.status = "building"
            writer = cls(store, header, lease)
            writer._write_manifest()
            log.info("started new cache at %s", store.uri)
            return writer
        diffs = existing.diff_identity(header)
        old_fp = existing.corpus.get("fingerprint")
        new_fp = header.corpus.get("fingerprint")
        if not allow_corpus_change and old_fp and new_fp and old_fp != new_fp:
            diffs.append(f"corpus.fingerprint: {old_fp!r} in cache, {new_fp!r} requested")
        if diffs:
            raise IncompatibleCacheError(
                f"{store.uri} already holds a cache built differently:\n  - "
                + "\n  - ".join(diffs)
                + "\nUse a new --out location, or delete the existing cache to rebuild it."
            )
        if allow_corpus_change:
            existing.corpus = header.corpus
        existing.extra = {**existing.extra, **header.extra}
        writer = cls(store, existing, lease)
        log.info(
            "resuming cache at %s: %d units already committed", store.uri, len(existing.shards)
        )
        return writer

    @property
    def committed_units(self) -> set[str]:
        return self.manifest.committed_units

    def set_codec(self, codec: dict[str, Any]) -> None:
        """Record the codec fitted on the first unit; written with the next commit. Refused once
        a shard is listed: every listed shard was encoded with the manifest's codec."""
        if self.manifest.shards and codec != self.manifest.codec:
            raise ManifestError(
                f"{self.store.uri}: a shard encoded with codec {codec.get('spec', '?')[:60]!r} "
                f"cannot join a cache whose {len(self.manifest.shards)} shard(s) use "
                f"{self.manifest.codec.get('spec', '?')[:60]!r}; this is a bug in the writer's "
                "caller: please report it."
            )
        self.manifest.codec = dict(codec)

    def commit(self, infos: Sequence[ShardInfo]) -> None:
        """List freshly written shards in the manifest; a unit already present is refused."""
        if self.lease is not None:
            self.lease.check()
        if not infos:
            return
        units = self.committed_units
        for info in infos:
            if info.unit in units:
                # Never list two shards for one unit: the newer file stays an orphan.
                raise ManifestError(
                    f"unit {info.unit!r} is already committed; refusing to list "
                    f"{info.path} as a second copy"
                )
            units.add(info.unit)
        self.manifest.shards.extend(infos)
        self.manifest.status = "building"
        self._write_manifest()

    def finish(self, stats: dict[str, Any] | None = None) -> Manifest:
        m = self.manifest
        m.stats = {
            **(stats or {}),
            "sequences": m.num_sequences,
            "tokens": m.num_tokens,
            "bytes": m.num_bytes,
            "bytes_per_token": round(m.num_bytes / m.num_tokens, 3) if m.num_tokens else None,
            "shards": len(m.shards),
        }
        m.status = "complete"
        self._write_manifest()
        return m

    def cleanup_orphans(self) -> list[str]:
        """Delete shard files no manifest entry names (left by a crash between write and commit).

        Only call this while holding the cache's write lease: a concurrent builder's
        not-yet-committed shards look exactly like orphans.
        """
        listed = {s.path for s in self.manifest.shards}
        removed = []
        for rel in self.store.list(SHARD_DIR):
            name = rel.rsplit("/", 1)[-1]
            if rel not in listed and (name.endswith(".parquet") or name.startswith(".tmp-")):
                self.store.delete(rel)
                removed.append(rel)
        if removed:
            log.info("removed %d uncommitted file(s) left by an interrupted run", len(removed))
        return removed

    def _write_manifest(self) -> None:
        from logitcache.format.manifest import _now

        if self.lease is not None:
            self.lease.check()  # never write the manifest once another builder may own it
        self.manifest.updated_at = _now()
        self.store.write_bytes(MANIFEST_NAME, self.manifest.to_json())


def open_leased_writer(
    uri: str,
    header: Manifest,
    storage_options: str | Mapping[str, Any] | None = None,
    *,
    lease: Lease,
    allow_corpus_change: bool = False,
) -> CacheWriter:
    """Open a cache for writing while holding ``lease``; then clear a crashed run's orphans.

    Orphan cleanup is only safe under the lease: another builder's uncommitted shards look
    exactly like orphans.
    """
    writer = CacheWriter.open(
        uri, header, storage_options, allow_corpus_change=allow_corpus_change, lease=lease
    )
    writer.cleanup_orphans()
    return writer
