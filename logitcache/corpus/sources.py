"""Resolve ``--corpus`` arguments (paths, globs, fsspec URIs) to a sorted list of files.

Sorting makes the document order, and therefore units and sample ids, independent of how the
filesystem happens to list a directory. Directories are walked recursively.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import fsspec

from logitcache.errors import CorpusError
from logitcache.storage import _with_env_defaults, parse_storage_options, redact_uri

log = logging.getLogger(__name__)
_GLOB_CHARS = set("*?[")


@dataclass(frozen=True)
class SourceFile:
    """One corpus file: the filesystem that reads it and a credential-free URL for messages."""

    fs: fsspec.AbstractFileSystem
    path: str
    url: str

    def open(self):
        """Binary file object; ``.gz``/``.zst`` etc. are decompressed transparently."""
        compression = fsspec.utils.infer_compression(self.path)
        fh = self.fs.open(self.path, "rb")
        if compression:
            return fsspec.core.compr[compression](fh, mode="rb")
        return fh


def _url(fs: fsspec.AbstractFileSystem, path: str, original: str) -> str:
    if "://" in original:
        return redact_uri(fs.unstrip_protocol(path))
    return path


def expand_sources(
    uris: Sequence[str], storage_options: str | Mapping[str, Any] | None = None
) -> list[SourceFile]:
    """Every file named by ``uris`` (globs expanded, directories walked), sorted per argument."""
    if not uris:
        raise CorpusError("no corpus given; pass --corpus PATH_OR_URI (globs allowed)")
    options = parse_storage_options(storage_options)
    out: list[SourceFile] = []
    seen: set[str] = set()
    for uri in uris:
        protocol = uri.split("://", 1)[0] if "://" in uri else "file"
        try:
            fs, path = fsspec.core.url_to_fs(uri, **_with_env_defaults(protocol, options))
        except (ImportError, ValueError) as exc:
            raise CorpusError(f"cannot open corpus {redact_uri(uri)!r}: {exc}") from exc
        if _GLOB_CHARS & set(path):
            paths = [p for p in fs.glob(path) if fs.isfile(p)]
        elif fs.isdir(path):
            paths = [p for p in fs.find(path) if not p.rsplit("/", 1)[-1].startswith(".")]
        elif fs.exists(path):
            paths = [path]
        else:
            raise CorpusError(
                f"corpus {redact_uri(uri)!r} does not exist; check the path, the glob or "
                "--storage-options"
            )
        if not paths:
            raise CorpusError(f"corpus glob {redact_uri(uri)!r} matched no files")
        for p in sorted(paths):
            url = _url(fs, p, uri)
            if url not in seen:
                seen.add(url)
                out.append(SourceFile(fs=fs, path=p, url=url))
    log.debug("corpus: %d file(s)", len(out))
    return out
