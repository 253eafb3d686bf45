"""Conditional writes: create a file only if absent, replace it only if unchanged since read.

Three primitives, on every filesystem a :class:`~logitcache.storage.Store` opens:

- ``read_versioned(rel)`` -> ``(bytes, version)`` or None; ``version`` is opaque (an S3 ETag,
  elsewhere a sha256 of the bytes);
- ``create_exclusive(rel, data)`` -> version; :class:`WriteConflictError` if the file exists;
- ``replace_if(rel, data, version)`` -> new version; :class:`WriteConflictError` if the file
  changed (or vanished) since ``version`` was read;
- ``delete_if(rel, version)``: remove it only if unchanged -- except on S3, where conditional
  ``DeleteObject`` is not honoured by every S3-compatible store (one that ignores ``If-Match``
  would delete unconditionally), so ``conditional_delete`` is False there and callers mark the
  file instead (the lease records ``released``).

Of two writers racing on one file, exactly one wins. How, per filesystem:

- local disk: creation with ``O_CREAT | O_EXCL``; replacement under an exclusive ``flock`` on a
  side file ``<name>.lock``, after checking the version;
- S3: ``PutObject`` with ``If-None-Match: *`` to create and ``If-Match: <etag>`` to replace
  (AWS since 2024; moto honours both). A lost race is recognised by the error *code* S3 returns
  (``PreconditionFailed``, ``ConditionalRequestConflict``), never by message text;
- ``memory://``: check-and-set under a process-wide lock;
- any other filesystem (e.g. ``gs://``): an existence/version check, a write, then a read-back
  that confirms the bytes. A narrow race remains; :attr:`Store.atomic_conditional_writes` is
  False there and the lease logs a warning.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import threading
import time
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

from logitcache.errors import StorageError, WriteConflictError

if TYPE_CHECKING:
    from logitcache.storage import Store

# fsspec's MemoryFileSystem keeps its files in one class-level dict per process, so the lock
# guarding check-and-set on it must be process-wide as well: one lock per store object would
# let two stores of the same memory:// path interleave.
_MEMORY_LOCK = threading.Lock()

# S3 error codes of a conditional request that lost (412 and 409 responses).
S3_CONFLICT_CODES = frozenset({"PreconditionFailed", "ConditionalRequestConflict", "412", "409"})


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def s3_error_code(exc: BaseException) -> str | None:
    """The S3 error code behind ``exc`` (s3fs wraps botocore's ClientError as the cause)."""
    seen = 0
    while exc is not None and seen < 5:
        response = getattr(exc, "response", None)
        if isinstance(response, Mapping):
            code = (response.get("Error") or {}).get("Code")
            status = (response.get("ResponseMetadata") or {}).get("HTTPStatusCode")
            return str(code or status) if (code or status) else None
        exc = exc.__cause__ or exc.__context__
        seen += 1
    return None


class ConditionalBackend:
    """Check-then-write under a lock (``_locked``); subclasses supply the lock or do better."""

    atomic = True
    conditional_delete = True

    def __init__(self, store: Store):
        self.store = store

    def read(self, rel: str) -> tuple[bytes, str] | None:
        try:
            data = self.store.fs.cat_file(self.store.path(rel))
        except FileNotFoundError:
            return None
        return data, digest(data)

    @contextlib.contextmanager
    def _locked(self, rel: str) -> Iterator[None]:
        yield

    def create(self, rel: str, data: bytes) -> str:
        with self._locked(rel):
            if self.store.fs.exists(self.store.path(rel)):
                raise WriteConflictError(f"{self.store.url(rel)} already exists")
            self.store.write_bytes(rel, data)
        return self._confirm(rel, data)

    def replace(self, rel: str, data: bytes, version: str) -> str:
        with self._locked(rel):
            current = self.read(rel)
            if current is None or current[1] != version:
                raise WriteConflictError(f"{self.store.url(rel)} changed since it was read")
            self.store.write_bytes(rel, data)
        return self._confirm(rel, data)

    def delete(self, rel: str, version: str) -> None:
        with self._locked(rel):
            current = self.read(rel)
            if current is None or current[1] != version:
                raise WriteConflictError(f"{self.store.url(rel)} changed since it was read")
            self.store.delete(rel)

    def _confirm(self, rel: str, data: bytes) -> str:
        return digest(data)


class GenericBackend(ConditionalBackend):
    """No conditional writes available: write, wait a moment, read back and compare."""

    atomic = False
    settle_s = 0.5

    def _confirm(self, rel: str, data: bytes) -> str:
        time.sleep(self.settle_s)
        self.store.invalidate()
        current = self.read(rel)
        if current is None or current[0] != data:
            raise WriteConflictError(f"{self.store.url(rel)} was overwritten by another writer")
        return current[1]


class MemoryBackend(ConditionalBackend):
    @contextlib.contextmanager
    def _locked(self, rel: str) -> Iterator[None]:
        with _MEMORY_LOCK:
            yield


class LocalBackend(ConditionalBackend):
    """``O_EXCL`` creation; replacement under an exclusive flock on ``<name>.lock``."""

    def read(self, rel: str) -> tuple[bytes, str] | None:
        try:
            with open(self.store.path(rel), "rb") as fh:
                data = fh.read()
        except FileNotFoundError:
            return None
        return data, digest(data)

    @contextlib.contextmanager
    def _locked(self, rel: str) -> Iterator[None]:
        import fcntl

        lock_path = self.store.path(rel) + ".lock"
        os.makedirs(os.path.dirname(lock_path), exist_ok=True)
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing releases the flock

    def create(self, rel: str, data: bytes) -> str:
        path = self.store.path(rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with self._locked(rel):
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                raise WriteConflictError(f"{self.store.url(rel)} already exists") from None
            try:
                os.write(fd, data)
                os.fsync(fd)
            finally:
                os.close(fd)
        return digest(data)


class S3Backend(ConditionalBackend):
    """S3 conditional PUTs: ``If-None-Match: *`` to create, ``If-Match: <etag>`` to replace."""

    conditional_delete = False

    def read(self, rel: str) -> tuple[bytes, str] | None:
        fs, path = self.store.fs, self.store.path(rel)
        for _ in range(5):
            try:
                before = fs.info(path, refresh=True)["ETag"]
                data = fs.cat_file(path)
                after = fs.info(path, refresh=True)["ETag"]
            except FileNotFoundError:
                return None
            if before == after:  # the bytes belong to this ETag
                return data, after
        raise StorageError(f"{self.store.url(rel)} keeps changing while it is read; retry later")

    def _put(self, rel: str, data: bytes, **cond: Any) -> str:
        fs, path = self.store.fs, self.store.path(rel)
        try:
            out = fs.pipe_file(path, data, **cond)
        except OSError as exc:
            code = s3_error_code(exc)
            # If-Match on a key that vanished answers 404 (NoSuchKey): the file changed too.
            lost = code in S3_CONFLICT_CODES or (cond.get("IfMatch") and code == "NoSuchKey")
            # s3fs turns the If-None-Match failure into FileExistsError itself (from the code).
            if lost or isinstance(exc, FileExistsError):
                raise WriteConflictError(
                    f"{self.store.url(rel)}: conditional write lost ({code or exc.errno})"
                ) from None
            raise
        fs.invalidate_cache(path)
        etag = out.get("ETag") if isinstance(out, Mapping) else None
        return etag or fs.info(path, refresh=True)["ETag"]

    def create(self, rel: str, data: bytes) -> str:
        return self._put(rel, data, mode="create")

    def replace(self, rel: str, data: bytes, version: str) -> str:
        return self._put(rel, data, IfMatch=version)

    def delete(self, rel: str, version: str) -> None:
        raise NotImplementedError(
            "conditional deletes are not used on S3 (not every S3-compatible store honours "
            "If-Match on DeleteObject); check Store.conditional_delete and mark the file instead"
        )


def backend_for(store: Store) -> ConditionalBackend:
    protocols = store.fs.protocol if isinstance(store.fs.protocol, tuple) else (store.fs.protocol,)
    if store.is_local:
        return LocalBackend(store)
    if "memory" in protocols:
        return MemoryBackend(store)
    if {"s3", "s3a"} & set(protocols):
        return S3Backend(store)
    return GenericBackend(store)


__all__ = ["S3_CONFLICT_CODES", "backend_for", "digest", "s3_error_code"]
