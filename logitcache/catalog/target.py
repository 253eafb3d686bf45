"""What a ``--catalog ROOT`` build does: reuse, resume or extend a shared cache, or start one.

The driver asks :func:`prepare_build` for a :class:`CatalogTarget` (a
:class:`~logitcache.format.target.WriteTarget` of ``ROOT/caches/<key>``), then writes through
it exactly as with a plain ``--out``; finishing also records the cache in ``ROOT/index/``.

Decisions (``target.action``): ``reuse`` a complete cache with the same corpus fingerprint;
``extend`` a catalog cache whose corpus fingerprint differs (the corpus grew: only units the
cache lacks are computed); ``resume`` an unfinished build of the same corpus; ``new`` otherwise.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from logitcache.catalog.catalog import Catalog, catalog_key
from logitcache.format.lease import LeaseConfig, acquire_lease
from logitcache.format.manifest import IDENTITY_SECTIONS, Manifest
from logitcache.format.target import WriteTarget
from logitcache.format.writer import CacheWriter

log = logging.getLogger(__name__)


@dataclass
class CatalogTarget(WriteTarget):
    """A write target inside a catalog: ``key`` names the cache, the index records it."""

    key: str | None = None
    catalog: Catalog | None = None

    def open_writer(self, header: Manifest) -> CacheWriter:
        existing = self.catalog.manifest(self.key) if self.catalog is not None else None
        if existing is not None and catalog_key(existing) == self.key:
            # Same key, so the same labels: adopt the cache's record of where the teacher and
            # tokenizer came from, which may name another machine's paths.
            for section in IDENTITY_SECTIONS:
                setattr(header, section, copy.deepcopy(getattr(existing, section)))
        return super().open_writer(header)

    def finish(self, manifest: Manifest | None = None) -> dict[str, Any] | None:
        """Record the finished cache in the catalog index and give the lease up."""
        try:
            if self.catalog is None or self.key is None:
                return None
            return self.catalog.write_index(self.key, manifest)
        finally:
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
) -> CatalogTarget:
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
        return CatalogTarget(
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
            return CatalogTarget(
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
    return CatalogTarget(
        uri=uri,
        key=key,
        action=action,
        catalog=catalog,
        lease=held,
        existing_fingerprint=fp,
        storage_options=catalog.storage_options,
    )


__all__ = ["CatalogTarget", "prepare_build"]
