"""Storage behind one small interface, on top of fsspec.

Every cache lives under a root URI (a local path, ``file://``, ``s3://``, ``gs://``,
``memory://``...). The rest of logitcache only ever names files *relative* to that root, and
:meth:`Store.path` refuses any relative name that would leave it, so a hostile manifest cannot
point a reader at ``../`` or another bucket.

Writes are atomic per file: on a local disk the bytes go to a hidden temporary name, are
fsync'ed and renamed into place; on object stores a single PUT is already all-or-nothing.
Conditional writes (create-if-absent, replace-if-unchanged; :mod:`.conditional`) serve the
write lease of the commit protocol.
"""

from __future__ import annotations

import json
import logging
import os
import posixpath
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import fsspec

from logitcache.errors import ManifestError, StorageError

log = logging.getLogger(__name__)

_SAFE_REL = re.compile(r"^[A-Za-z0-9_.\-/=]+$")
_LOCAL_PROTOCOLS = {"file", "local"}


# The help of every command's --storage-options (one text for build, train, info, ...).
STORAGE_OPTIONS_HELP = (
    'fsspec options for the URI as JSON, e.g. \'{"client_kwargs": {"region_name": "eu-west-1"}}\'; '
    "AWS_* environment variables (AWS_ENDPOINT_URL included) are honoured for s3://"
)


def parse_storage_options(value: str | Mapping[str, Any] | None) -> dict[str, Any]:
    """Accept the CLI's ``--storage-options JSON`` string, a mapping, or nothing."""
    if value is None or value == "":
        return {}
    if isinstance(value, Mapping):
        return dict(value)
    try:
        parsed = json.loads(value)
    except json.JSONDecodeError as exc:
        raise StorageError(
            f"--storage-options is not valid JSON ({exc.msg} at char {exc.pos}); "
            'pass an object such as \'{"anon": false, "client_kwargs": {"region_name": "us-east-1"}}\''
        ) from None
    if not isinstance(parsed, dict):
        raise StorageError("--storage-options must be a JSON object, e.g. '{\"anon\": true}'")
    return parsed


def _with_env_defaults(protocol: str, options: dict[str, Any]) -> dict[str, Any]:
    """Honour AWS_ENDPOINT_URL for s3 even on botocore versions that ignore it."""
    if protocol in {"s3", "s3a"}:
        endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
        has_endpoint = "endpoint_url" in options or "endpoint_url" in options.get(
            "client_kwargs", {}
        )
        if endpoint and not has_endpoint:
            options = {**options, "endpoint_url": endpoint}
    return options


def redact_uri(uri: str) -> str:
    """Drop any ``user:secret@`` from a URI before it reaches a log or a manifest."""
    return re.sub(r"(?<=://)[^/@]*@", "", uri)


def check_relative(rel: str) -> str:
    """Return ``rel`` normalised, or raise if it is not a plain path inside the root."""
    if not isinstance(rel, str) or not rel:
        raise ManifestError(f"empty or non-string path {rel!r} in cache")
    if "://" in rel or rel.startswith("/") or "\\" in rel or not _SAFE_REL.match(rel):
        raise ManifestError(
            f"path {rel!r} is not a plain relative path inside the cache root; a manifest may "
            "only name files under its own directory. The manifest was edited or is hostile: "
            "do not read this cache."
        )
    norm = posixpath.normpath(rel)
    if norm.startswith("..") or norm == ".":
        raise ManifestError(
            f"path {rel!r} leaves the cache root; refusing to read it. The manifest was edited "
            "or is hostile: do not read this cache."
        )
    return norm


@dataclass
class Store:
    """A cache root on some filesystem. Picklable, so Ray workers can write shards directly."""

    uri: str
    fs: fsspec.AbstractFileSystem = field(repr=False)
    root: str

    @classmethod
    def open(cls, uri: str, storage_options: str | Mapping[str, Any] | None = None) -> Store:
        options = parse_storage_options(storage_options)
        uri = str(uri)
        protocol = uri.split("://", 1)[0] if "://" in uri else "file"
        options = _with_env_defaults(protocol, options)
        try:
            fs, root = fsspec.core.url_to_fs(uri, **options)
        except (ImportError, ValueError) as exc:
            raise StorageError(
                f"cannot open storage for {redact_uri(uri)!r}: {exc}. Local paths, file://, "
                "memory://, s3:// (s3fs) and gs:// (pip install gcsfs) are supported."
            ) from exc
        root = root.rstrip("/") or root
        return cls(uri=redact_uri(uri).rstrip("/"), fs=fs, root=root)

    @property
    def is_local(self) -> bool:
        protocols = self.fs.protocol if isinstance(self.fs.protocol, tuple) else (self.fs.protocol,)
        return any(p in _LOCAL_PROTOCOLS for p in protocols)

    def path(self, rel: str) -> str:
        return posixpath.join(self.root, check_relative(rel))

    def url(self, rel: str) -> str:
        """A URI for humans (error messages, logs): never carries credentials."""
        return f"{self.uri}/{check_relative(rel)}"

    def exists(self, rel: str) -> bool:
        try:
            return self.fs.exists(self.path(rel))
        except OSError as exc:
            raise StorageError(f"checking {self.url(rel)} failed: {exc}") from exc

    def size(self, rel: str) -> int:
        try:
            return int(self.fs.size(self.path(rel)))
        except FileNotFoundError:
            raise
        except OSError as exc:
            raise StorageError(f"reading the size of {self.url(rel)} failed: {exc}") from exc

    def read_bytes(self, rel: str) -> bytes:
        try:
            return self.fs.cat_file(self.path(rel))
        except FileNotFoundError:
            raise
        except OSError as exc:
            raise StorageError(f"reading {self.url(rel)} failed: {exc}") from exc

    def open_input(self, rel: str, **kwargs: Any):
        """A seekable file object; pyarrow reads Parquet footers and columns through it."""
        return self.fs.open(self.path(rel), "rb", **kwargs)

    def write_bytes(self, rel: str, data: bytes) -> None:
        """Write ``data`` so that the file appears whole or not at all, and is durable."""
        target = self.path(rel)
        parent = posixpath.dirname(target)
        try:
            if self.is_local:
                os.makedirs(parent, exist_ok=True)
                tmp = posixpath.join(
                    parent, f".tmp-{uuid.uuid4().hex}-{posixpath.basename(target)}"
                )
                try:
                    with open(tmp, "wb") as fh:
                        fh.write(data)
                        fh.flush()
                        os.fsync(fh.fileno())
                    os.replace(tmp, target)
                finally:
                    if os.path.exists(tmp):
                        os.unlink(tmp)
                dir_fd = os.open(parent, os.O_RDONLY)
                try:
                    os.fsync(dir_fd)
                finally:
                    os.close(dir_fd)
            else:
                self.fs.pipe_file(target, data)
        except OSError as exc:
            raise StorageError(
                f"writing {self.url(rel)} failed: {exc}. Nothing was committed for this file; "
                "free space or fix permissions/credentials and re-run the same command to resume."
            ) from exc

    def delete(self, rel: str) -> None:
        try:
            self.fs.rm_file(self.path(rel))
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise StorageError(f"deleting {self.url(rel)} failed: {exc}") from exc

    def list(self, rel_dir: str) -> list[str]:
        """Relative paths of files directly under ``rel_dir`` (missing dir: empty list)."""
        base = self.path(rel_dir)
        try:
            entries = self.fs.ls(base, detail=False)
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise StorageError(
                f"listing {self.uri}/{rel_dir} failed: {exc}. Nothing was changed; re-run the "
                "same command to resume once the store is reachable."
            ) from exc
        out = []
        for entry in entries:
            name = posixpath.basename(str(entry).rstrip("/"))
            out.append(f"{rel_dir.rstrip('/')}/{name}")
        return sorted(out)

    def missing_bucket(self) -> str | None:
        """On an object store, the bucket of this root if it does not exist (else None): lets a
        'not found' say that the bucket itself is missing."""
        protocols = self.fs.protocol if isinstance(self.fs.protocol, tuple) else (self.fs.protocol,)
        if self.is_local or "memory" in protocols:
            return None
        bucket = self.root.split("/", 1)[0]
        try:
            return None if self.fs.exists(bucket) else bucket
        except OSError:
            return None

    # -- conditional writes (see logitcache.storage.conditional) -------------------------------
    @property
    def atomic_conditional_writes(self) -> bool:
        """False where conditional writes fall back to write-then-read-back (a narrow race)."""
        from logitcache.storage.conditional import backend_for

        return backend_for(self).atomic

    @property
    def conditional_delete(self) -> bool:
        """Whether :meth:`delete_if` is available (not on S3; see :mod:`.conditional`)."""
        from logitcache.storage.conditional import backend_for

        return backend_for(self).conditional_delete

    def delete_if(self, rel: str, version: str) -> None:
        """Delete ``rel`` only if it still has ``version``. Raises WriteConflictError."""
        from logitcache.storage.conditional import backend_for

        backend_for(self).delete(rel, version)

    def read_versioned(self, rel: str) -> tuple[bytes, str] | None:
        """``(bytes, version)`` of ``rel``, or None if it does not exist."""
        from logitcache.storage.conditional import backend_for

        return backend_for(self).read(rel)

    def create_exclusive(self, rel: str, data: bytes) -> str:
        """Create ``rel`` only if it does not exist; its version. Raises WriteConflictError."""
        from logitcache.storage.conditional import backend_for

        return backend_for(self).create(rel, data)

    def replace_if(self, rel: str, data: bytes, version: str) -> str:
        """Replace ``rel`` only if it still has ``version``; the new version. Raises
        WriteConflictError if another writer changed or removed it first."""
        from logitcache.storage.conditional import backend_for

        return backend_for(self).replace(rel, data, version)

    def invalidate(self) -> None:
        """Forget cached listings (object stores cache them; another writer may have changed)."""
        self.fs.invalidate_cache()


__all__ = [
    "STORAGE_OPTIONS_HELP",
    "Store",
    "check_relative",
    "parse_storage_options",
    "redact_uri",
]
