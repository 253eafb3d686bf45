"""Where one write job writes, under the cache's write lease.

A :class:`WriteTarget` holds the lease of one cache URI and opens its leased
:class:`~logitcache.format.writer.CacheWriter`::

    target = open_write_target(out, header, storage_options, lease=LeaseConfig(wait_s=60))
    with target:                                # holds the write lease, releases it on exit
        writer = target.open_writer(header)     # checks the lease before every commit
        ...  # compute the units not in writer.committed_units, writer.commit(...)
        target.finish(writer.finish(stats))

``--catalog`` builds get a subclass from :func:`logitcache.catalog.prepare_build`, which may
also decide that a complete cache is reused as is (``reuse_complete``; no lease then).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from logitcache.errors import ConfigError
from logitcache.format.lease import Lease, LeaseConfig, acquire_lease
from logitcache.format.manifest import Manifest
from logitcache.format.writer import CacheWriter, open_leased_writer, read_manifest
from logitcache.storage import Store


@dataclass
class WriteTarget:
    """A cache URI and what a job must do there: ``new``, ``resume``, ``extend`` or ``reuse``."""

    uri: str
    action: str
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

    def open_writer(self, header: Manifest) -> CacheWriter:
        """Open the cache for writing; call only while holding the lease (not after reuse)."""
        if self.lease is None:
            raise ConfigError(f"{self.uri} is reused as is: there is nothing to write")
        return open_leased_writer(
            self.uri,
            header,
            self.storage_options,
            lease=self.lease,
            allow_corpus_change=self.allow_corpus_change,
        )

    def finish(self, manifest: Manifest | None = None) -> Any:
        """The job is done: give the lease up."""
        self.release()

    def release(self) -> None:
        if self.lease is not None:
            self.lease.release()

    def __enter__(self) -> WriteTarget:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release()


def open_write_target(
    out: str,
    header: Manifest,
    storage_options: str | Mapping[str, Any] | None = None,
    *,
    lease: LeaseConfig | None = None,
) -> WriteTarget:
    """Take the write lease of ``out`` (so two builders of one cache never interleave, and
    orphan cleanup is safe); the action is ``new`` or ``resume``. A changed corpus is refused
    by :meth:`CacheWriter.open` (extension is a catalog feature)."""
    if not out:
        raise ConfigError("no output: pass --out CACHE_URI or --catalog ROOT")
    store = Store.open(out, storage_options)
    held = acquire_lease(store, lease or LeaseConfig())
    try:
        existing = read_manifest(store)
    except BaseException:
        held.release()
        raise
    return WriteTarget(
        uri=out,
        action="new" if existing is None else "resume",
        lease=held,
        existing_fingerprint=existing.corpus.get("fingerprint") if existing else None,
        storage_options=storage_options,
    )


__all__ = ["WriteTarget", "open_write_target"]
