"""Plan a build on the driver: read the corpus, tokenise it (in-process or in Ray CPU tasks),
and cut it into deterministic units.

Tokenisation is the only heavy part, so it goes through a ``tokenize_map`` that the caller
chooses: the built-in ``map`` for a local run, :func:`ray_tokenize_map` for a Ray run (ordered,
a bounded number of tasks in flight). Either way the units are identical. The plan (token ids of
all planned rows) is held in driver memory, about 5 bytes per token; split corpora far beyond
10^8 tokens into several builds.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from logitcache.capture.options import PackingOptions
from logitcache.capture.stages import docs_to_json, tokenize_blob
from logitcache.capture.transport import unpack_rows
from logitcache.corpus import (
    Document,
    ReadStats,
    TokenizedDoc,
    Unit,
    UnitPlanner,
    expand_sources,
    read_documents,
)

log = logging.getLogger(__name__)

CHUNK_DOCS = 256
CHUNK_CHARS = 1 << 20

TokenizeMap = Callable[[Iterable[str]], Iterator[bytes]]


@dataclass
class Plan:
    units: list[Unit]
    fingerprint: str
    read_stats: ReadStats
    plan_stats: Any
    sources: list[str] = field(default_factory=list)

    @property
    def tokens(self) -> int:
        return sum(u.tokens for u in self.units)

    def corpus_section(self, packing: PackingOptions) -> dict[str, Any]:
        """The manifest's ``corpus`` section (fingerprint is content-only; URLs are informative)."""
        return {
            "fingerprint": self.fingerprint,
            "sources": self.sources[:100],
            "num_sources": len(self.sources),
            "format": packing.format,
            "text_field": packing.text_field,
            "max_tokens": packing.max_tokens,
            **self.read_stats.as_dict(),
            **{f"planned_{k}": v for k, v in self.plan_stats.as_dict().items()},
        }


def _chunks(docs: Iterable[Document]) -> Iterator[list[Document]]:
    chunk: list[Document] = []
    chars = 0
    for d in docs:
        chunk.append(d)
        chars += len(d.text) if d.text is not None else sum(len(m["content"]) for m in d.messages)
        if len(chunk) >= CHUNK_DOCS or chars >= CHUNK_CHARS:
            yield chunk
            chunk, chars = [], 0
    if chunk:
        yield chunk


def local_tokenize_map(tokenizer) -> TokenizeMap:
    return lambda jobs: (tokenize_blob(tokenizer, j) for j in jobs)


def corpus_fingerprint(
    corpus: list[str], packing: PackingOptions, tokenizer, *, storage_options: Any = None
) -> str:
    """The corpus fingerprint ``build`` would record for ``corpus`` read and packed as
    ``packing`` (reads and tokenises the corpus; no teacher forward)."""
    return plan_corpus(corpus, packing, tokenizer, storage_options=storage_options).fingerprint


def plan_build(cfg, tokenizer, tokenize_map: TokenizeMap | None = None) -> Plan:
    """The plan of a :class:`~logitcache.capture.CaptureConfig`'s corpus."""
    return plan_corpus(
        cfg.corpus,
        cfg.packing,
        tokenizer,
        storage_options=cfg.output.storage_options,
        tokenize_map=tokenize_map,
    )


def plan_corpus(
    corpus: list[str],
    packing: PackingOptions,
    tokenizer,
    *,
    storage_options: Any = None,
    tokenize_map: TokenizeMap | None = None,
) -> Plan:
    """Read, tokenise and cut ``corpus`` into units as ``packing`` says (deterministically)."""
    tokenize_map = tokenize_map or local_tokenize_map(tokenizer)
    sources = expand_sources(corpus, storage_options)
    read_stats = ReadStats()
    docs = read_documents(
        sources,
        fmt=packing.format,
        text_field=packing.text_field,
        stats=read_stats,
        invalid_utf8=packing.invalid_utf8,
    )
    planner = UnitPlanner(packing.planner_config(tokenizer.eos_token_id))
    chunks: list[list[Document]] = []

    def jobs() -> Iterator[str]:
        for chunk in _chunks(docs):
            chunks.append(chunk)
            yield docs_to_json(chunk)

    units: list[Unit] = []
    for blob in tokenize_map(jobs()):
        chunk = chunks.pop(0)
        for doc, tok in zip(chunk, unpack_rows(blob)):
            units += planner.add(doc.content_hash, TokenizedDoc(tok["ids"], tok["targets"]))
            if planner.exhausted:
                break
        if planner.exhausted:
            break
    units += planner.finish()
    stats = planner.stats
    log.info(
        "planned %d unit(s): %d rows, %d tokens from %d documents in %d file(s)%s",
        len(units),
        stats.rows,
        stats.tokens,
        stats.documents,
        read_stats.files,
        " (capped by --max-tokens)" if stats.truncated else "",
    )
    return Plan(
        units=units,
        fingerprint=planner.fingerprint,
        read_stats=read_stats,
        plan_stats=stats,
        sources=[s.url for s in sources],
    )
