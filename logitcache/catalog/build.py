"""Where a build writes, under a write lease: ``--catalog ROOT`` (reuse, resume or extend a
shared cache) or a plain ``--out`` (one writer at a time).

The capture pipeline stays unaware of catalogs; it asks :func:`open_build_target` where to
write and whether to compute anything at all::

    target = open_build_target(cfg.out, header, cfg.storage_options,
                               catalog=cfg.catalog, lease=LeaseConfig(wait_s=cfg.wait_lease))
    if target.reuse_complete:
        return open_cache(target.uri, cfg.storage_options).manifest   # nothing to compute
    with target:                                # holds the write lease, releases it on exit
        writer = target.open_writer(header)     # CacheWriter that checks the lease per commit
        ...  # compute the units not in writer.committed_units, writer.commit(...)
        target.finish(writer.finish(stats))     # updates ROOT/index/<key>.json

Decisions (``target.action``): ``reuse`` a complete cache with the same corpus fingerprint;
``extend`` a catalog cache whose corpus fingerprint differs (the corpus grew: only units the
cache lacks are computed); ``resume`` an unfinished build of the same corpus; ``new`` otherwise.
"""

from __future__ import annotations

import argparse
import copy
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from logitcache.catalog.catalog import Catalog, catalog_key
from logitcache.catalog.lease import Lease, LeaseConfig, acquire_lease
from logitcache.errors import ConfigError
from logitcache.format.manifest import IDENTITY_SECTIONS, Manifest, ShardInfo
from logitcache.format.writer import CacheWriter, read_manifest
from logitcache.storage import Store

log = logging.getLogger(__name__)

ACTIONS = ("reuse", "new", "resume", "extend")


class LeasedCacheWriter(CacheWriter):
    """A :class:`CacheWriter` that refuses to commit once its write lease is lost."""

    lease: Lease | None = None

    def commit(self, infos: Sequence[ShardInfo]) -> None:
        if self.lease is not None:
            self.lease.check()
        super().commit(infos)

    def finish(self, stats: dict[str, Any] | None = None) -> Manifest:
        if self.lease is not None:
            self.lease.check()
        return super().finish(stats)


def open_leased_writer(
    uri: str,
    header: Manifest,
    storage_options: str | Mapping[str, Any] | None = None,
    *,
    lease: Lease,
    allow_corpus_change: bool = False,
) -> LeasedCacheWriter:
    """Open a cache for writing while holding ``lease``; then clear a crashed run's orphans.

    Orphan cleanup is only safe under the lease: another builder's uncommitted shards look
    exactly like orphans.
    """
    writer = LeasedCacheWriter.open(
        uri, header, storage_options, allow_corpus_change=allow_corpus_change
    )
    writer.lease = lease
    writer.cleanup_orphans()
    return writer


@dataclass
class BuildTarget:
    """Where a build writes, and what it must do there (``catalog`` is None for ``--out``)."""

    uri: str
    key: str | None
    action: str
    catalog: Catalog | None = None
    lease: Lease | None = None
    existing_fingerprint: str | None = None
    storage_options: str | Mapping[str, Any] | None = None

    @property
    def reuse_complete(self) -> bool:
        """True: a complete matching cache exists; compute nothing."""
        return self.action == "reuse"

    @property
    def allow_corpus_change(self) -> bool:
        return self.action == "extend"

    def open_writer(self, header: Manifest) -> LeasedCacheWriter:
        """Open the cache for writing; call only while holding the lease (not after reuse)."""
        if self.lease is None:
            raise ConfigError(f"{self.uri} is reused as is: there is nothing to write")
        existing = self.catalog.manifest(self.key) if self.catalog is not None else None
        if existing is not None and catalog_key(existing) == self.key:
            # Same key, so the same labels: adopt the cache's record of where the teacher and
            # tokenizer came from, which may name another machine's paths.
            for section in IDENTITY_SECTIONS:
                setattr(header, section, copy.deepcopy(getattr(existing, section)))
        return open_leased_writer(
            self.uri,
            header,
            self.storage_options,
            lease=self.lease,
            allow_corpus_change=self.allow_corpus_change,
        )

    def finish(self, manifest: Manifest | None = None) -> dict[str, Any] | None:
        """Record the finished cache in the catalog index (if any) and give the lease up."""
        try:
            if self.catalog is None or self.key is None:
                return None
            return self.catalog.write_index(self.key, manifest)
        finally:
            self.release()

    def release(self) -> None:
        if self.lease is not None:
            self.lease.release()

    def __enter__(self) -> BuildTarget:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release()


def _decide(existing: Manifest | None, header: Manifest) -> tuple[str, str | None]:
    if existing is None:
        return "new", None
    old_fp = existing.corpus.get("fingerprint")
    new_fp = header.corpus.get("fingerprint")
    if old_fp and new_fp and old_fp != new_fp:
        return "extend", old_fp
    if existing.status == "complete" and old_fp and old_fp == new_fp:
        return "reuse", old_fp
    return "resume", old_fp


def prepare_build(
    root: str,
    header: Manifest,
    storage_options: str | Mapping[str, Any] | None = None,
    *,
    lease: LeaseConfig | None = None,
) -> BuildTarget:
    """Find or reserve the catalog cache for ``header``; hold its write lease unless reused.

    Reuse needs only read access. Anything else takes the cache's lease first (waiting up to
    ``lease.wait_s``), then decides again: the builder we waited for may have finished the
    very cache we wanted.
    """
    catalog = Catalog.open(root, storage_options)
    key = catalog_key(header)
    uri = catalog.cache_uri(key)
    action, fp = _decide(catalog.manifest(key), header)
    if action == "reuse":
        log.info("catalog: reusing complete cache %s (%s)", key, uri)
        return BuildTarget(
            uri=uri, key=key, action=action, catalog=catalog, existing_fingerprint=fp
        )
    held = acquire_lease(catalog.cache_store(key), lease or LeaseConfig())
    try:
        catalog.cache_store(key).invalidate()
        existing = catalog.manifest(key)
        action, fp = _decide(existing, header)
        if action == "reuse":
            held.release()
            log.info("catalog: cache %s was completed by another builder; reusing it", key)
            return BuildTarget(
                uri=uri, key=key, action=action, catalog=catalog, existing_fingerprint=fp
            )
        if existing is not None:
            catalog.write_index(key, existing)
    except BaseException:
        held.release()
        raise
    log.info(
        "catalog: %s cache %s at %s",
        {"new": "starting", "resume": "resuming", "extend": "extending"}[action],
        key,
        uri,
    )
    return BuildTarget(
        uri=uri,
        key=key,
        action=action,
        catalog=catalog,
        lease=held,
        existing_fingerprint=fp,
        storage_options=catalog.storage_options,
    )


def open_build_target(
    out: str | None,
    header: Manifest,
    storage_options: str | Mapping[str, Any] | None = None,
    *,
    catalog: str | None = None,
    lease: LeaseConfig | None = None,
) -> BuildTarget:
    """The one call a build makes before writing: ``--catalog ROOT`` or a plain ``--out``.

    With a catalog this is :func:`prepare_build`. With ``--out`` the cache's lease is taken
    (so two builders of one ``--out`` never interleave, and orphan cleanup is safe) and the
    action is ``new`` or ``resume``; a changed corpus is refused by ``CacheWriter.open`` as
    before (extension is a catalog feature).
    """
    if catalog:
        return prepare_build(catalog, header, storage_options, lease=lease)
    if not out:
        raise ConfigError("no output: pass --out CACHE_URI or --catalog ROOT")
    store = Store.open(out, storage_options)
    held = acquire_lease(store, lease or LeaseConfig())
    try:
        existing = read_manifest(store)
    except BaseException:
        held.release()
        raise
    return BuildTarget(
        uri=out,
        key=None,
        action="new" if existing is None else "resume",
        lease=held,
        existing_fingerprint=existing.corpus.get("fingerprint") if existing else None,
        storage_options=storage_options,
    )


def add_build_options(p: argparse.ArgumentParser) -> None:
    """The catalog/lease options of ``logitcache build`` (one call in its ``add_parser``)."""
    p.add_argument(
        "--catalog",
        default=None,
        metavar="ROOT",
        help="shared cache catalog root (e.g. s3://bucket/logitcache): reuse a complete "
        "matching cache, extend it when the corpus grew, or build it under ROOT/caches/<key>",
    )
    p.add_argument(
        "--wait-lease",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="if another builder is writing the same cache, wait this long for it (default: "
        "refuse at once)",
    )
    p.add_argument(
        "--lease-ttl",
        type=float,
        default=LeaseConfig().ttl_s,
        metavar="SECONDS",
        help="write lease lifetime; a crashed builder's cache is taken over after this long",
    )


def lease_config_from_args(args: argparse.Namespace) -> LeaseConfig:
    return LeaseConfig(ttl_s=args.lease_ttl, wait_s=args.wait_lease)


__all__ = [
    "ACTIONS",
    "BuildTarget",
    "LeasedCacheWriter",
    "add_build_options",
    "lease_config_from_args",
    "open_build_target",
    "open_leased_writer",
    "prepare_build",
]
