"""A catalog of shared caches under one root URI, so one team's teacher run serves the next.

Layout under ``ROOT`` (any URI a :class:`~logitcache.storage.Store` opens)::

    ROOT/caches/<key>/manifest.json, shards/...   a normal cache (open_cache works on it)
    ROOT/caches/<key>/_lease.json                  the write lease while a build runs
    ROOT/index/<key>.json                          a small summary, so ``ls`` reads one file each

The key is a hash of how the soft labels were computed: teacher identity, tokenizer identity,
capture parameters and codec -- the manifest sections a resumed build must match
(:data:`logitcache.format.manifest.IDENTITY_SECTIONS`). The corpus is deliberately *not* in
the key: a corpus that grew maps to the same cache, which is then extended with only the units
it lacks (units are content-hashed groups of documents). The corpus fingerprint is recorded in
the manifest and the index and compared to decide between reuse and extension.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from logitcache.errors import ManifestError
from logitcache.format.manifest import IDENTITY_SECTIONS, Manifest
from logitcache.format.writer import read_manifest
from logitcache.storage import Store

log = logging.getLogger(__name__)

CACHES_DIR = "caches"
INDEX_DIR = "index"
KEY_CHARS = 24


# Fields that say *where* a teacher or tokenizer was loaded from, not *what* it is. When a
# content hash is present they are left out of the key, so two teams loading the same weights
# from different paths (or a hub snapshot and a local copy) share one cache.
_LOCATION_FIELDS = {
    "teacher": ("weights_sha256", ("name", "source", "gguf_file", "revision")),
    "tokenizer": ("vocab_sha256", ("name",)),
}


# Codec fields fitted to the data (lc1's rank table): a grown corpus may fit a different table,
# yet its cache is the same cache, extended with the table it already has.
_FITTED_CODEC_FIELDS = ("spec", "ranks", "ranks_listed", "ranks_sha256")


def key_identity(manifest: Manifest) -> dict[str, Any]:
    """The identity sections with location-only fields dropped where a content hash stands in,
    and the codec reduced to its name and chosen parameters."""
    identity = {}
    for section in IDENTITY_SECTIONS:
        value = dict(getattr(manifest, section))
        if section == "codec":
            value = {k: v for k, v in value.items() if k not in _FITTED_CODEC_FIELDS}
        hash_field, location = _LOCATION_FIELDS.get(section, (None, ()))
        if hash_field and value.get(hash_field):
            for name in location:
                value.pop(name, None)
        identity[section] = value
    return identity


def catalog_key(manifest: Manifest) -> str:
    """Stable key of a cache: sha256 of the canonical JSON of :func:`key_identity`.

    Built from the sections :meth:`CacheWriter.open` compares before resuming (teacher,
    tokenizer, capture, codec), minus where things were loaded from; never the corpus.
    """
    blob = json.dumps(key_identity(manifest), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:KEY_CHARS]


def summarize(manifest: Manifest, key: str, uri: str) -> dict[str, Any]:
    """The index entry of one cache: what ``catalog ls`` prints and ``find`` matches on."""
    corpus = manifest.corpus
    return {
        "key": key,
        "uri": uri,
        "status": manifest.status,
        "teacher": manifest.teacher.get("name"),
        "teacher_identity": manifest.teacher,
        "tokenizer": manifest.tokenizer.get("name"),
        "vocab_sha256": manifest.tokenizer.get("vocab_sha256"),
        "top_k": manifest.top_k,
        "rs_samples": manifest.rs_samples,
        "seq_len": manifest.capture.get("seq_len"),
        "packing": manifest.capture.get("packing"),
        "unit_tokens": manifest.capture.get("unit_tokens"),
        "codec": manifest.codec.get("spec"),
        "corpus": _corpus_label(corpus),
        "corpus_fingerprint": corpus.get("fingerprint"),
        "corpus_max_tokens": corpus.get("max_tokens"),
        "corpus_format": corpus.get("format"),
        "corpus_text_field": corpus.get("text_field"),
        "sequences": manifest.num_sequences,
        "tokens": manifest.num_tokens,
        "bytes": manifest.num_bytes,
        "created_at": manifest.created_at,
        "updated_at": manifest.updated_at,
    }


def _corpus_label(corpus: Mapping[str, Any]) -> str:
    for field in ("name", "sources", "uris", "uri"):
        value = corpus.get(field)
        if value:
            if isinstance(value, (list, tuple)):
                shown = ", ".join(str(v) for v in value[:2])
                return shown + (f" (+{len(value) - 2})" if len(value) > 2 else "")
            return str(value)
    fp = corpus.get("fingerprint")
    return f"fingerprint {fp[:12]}" if fp else "?"


@dataclass
class Catalog:
    """The caches under one root. Reading needs no write access."""

    root: Store
    storage_options: dict[str, Any] | None = None

    @classmethod
    def open(cls, root: str, storage_options: str | Mapping[str, Any] | None = None) -> Catalog:
        from logitcache.storage import parse_storage_options

        options = parse_storage_options(storage_options)
        return cls(root=Store.open(root, options), storage_options=options)

    def cache_uri(self, key: str) -> str:
        return f"{self.root.uri}/{CACHES_DIR}/{key}"

    def cache_store(self, key: str) -> Store:
        # Reuse the root's filesystem so credentials given for ROOT apply to every cache.
        return Store(
            uri=self.cache_uri(key), fs=self.root.fs, root=self.root.path(f"{CACHES_DIR}/{key}")
        )

    def manifest(self, key: str) -> Manifest | None:
        return read_manifest(self.cache_store(key))

    def write_index(self, key: str, manifest: Manifest | None = None) -> dict[str, Any]:
        """(Re)write ``index/<key>.json`` from the cache's manifest."""
        manifest = manifest or self.manifest(key)
        if manifest is None:
            raise ManifestError(f"no cache under {self.cache_uri(key)} to index")
        entry = summarize(manifest, key, self.cache_uri(key))
        self.root.write_bytes(
            f"{INDEX_DIR}/{key}.json", (json.dumps(entry, indent=1) + "\n").encode()
        )
        return entry

    def entries(self) -> list[dict[str, Any]]:
        """Every indexed cache, oldest first. Unreadable index files are skipped with a warning."""
        self.root.invalidate()
        out = []
        for rel in self.root.list(INDEX_DIR):
            if not rel.endswith(".json"):
                continue
            try:
                entry = json.loads(self.root.read_bytes(rel))
                entry["key"]  # noqa: B018 - the one field every entry needs
            except (FileNotFoundError, ValueError, KeyError, TypeError) as exc:
                log.warning("skipping unreadable catalog index %s: %s", self.root.url(rel), exc)
                continue
            out.append(entry)
        return sorted(out, key=lambda e: (str(e.get("created_at", "")), e["key"]))

    def reindex(self) -> list[dict[str, Any]]:
        """Rebuild the index from the caches' manifests (after a crash, or a manual copy)."""
        out = []
        for rel in self.root.list(CACHES_DIR):
            key = rel.rsplit("/", 1)[-1]
            manifest = self.manifest(key)
            if manifest is not None:
                out.append(self.write_index(key, manifest))
        return out

    def find(
        self,
        *,
        teacher: str | None = None,
        key: str | None = None,
        tokenizer: Mapping[str, Any] | None = None,
        corpus_fingerprint: str | None = None,
        top_k: int | None = None,
        rs_samples: int | None = None,
        seq_len: int | None = None,
        complete_only: bool = False,
    ) -> list[dict[str, Any]]:
        """Index entries matching every given criterion (None = any).

        ``teacher`` matches the recorded teacher name or source; ``tokenizer`` (a
        ``tokenizer_identity`` dict) matches on ``vocab_sha256`` so two teams with the same
        tokenizer under different names still find each other's caches.
        """
        out = []
        for e in self.entries():
            ident = e.get("teacher_identity") or {}
            if key is not None and e["key"] != key:
                continue
            if teacher is not None and teacher not in {e.get("teacher"), ident.get("source")}:
                continue
            if tokenizer is not None and tokenizer.get("vocab_sha256") != e.get("vocab_sha256"):
                continue
            if corpus_fingerprint is not None and e.get("corpus_fingerprint") != corpus_fingerprint:
                continue
            if top_k is not None and e.get("top_k") != top_k:
                continue
            if rs_samples is not None and e.get("rs_samples") != rs_samples:
                continue
            if seq_len is not None and e.get("seq_len") != seq_len:
                continue
            if complete_only and e.get("status") != "complete":
                continue
            out.append(e)
        return out


__all__ = ["CACHES_DIR", "INDEX_DIR", "Catalog", "catalog_key", "key_identity", "summarize"]
