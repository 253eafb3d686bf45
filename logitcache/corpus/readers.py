"""Read documents from corpus files: plain text, JSONL, Parquet and chat JSONL.

One reader per format, each a generator of :class:`Document`. Choices:

- plain text: **one document per file** (a book, a page, a source file). For many short
  documents in one file use JSONL, which says unambiguously where each one ends.
- JSONL: one JSON object per line, text in ``text_field``. Parquet: one row per document, text
  in the column ``text_field``.
- chat JSONL: one object per line with a ``messages`` list of ``{"role", "content"}``; it is
  rendered later with the teacher tokenizer's chat template.

Bad input that only affects one document (invalid UTF-8, empty or whitespace-only text) is
skipped and counted in :class:`ReadStats`; structural errors (a line that is not JSON, a missing
field) raise :class:`CorpusError` naming the file and line, because they mean the wrong file or
the wrong ``--text-field``.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from logitcache.corpus.sources import SourceFile
from logitcache.errors import CorpusError

log = logging.getLogger(__name__)

FORMATS = ("auto", "text", "jsonl", "parquet", "chat")
_TEXT_SUFFIXES = (".txt", ".text", ".md", ".rst")
_JSONL_SUFFIXES = (".jsonl", ".ndjson", ".json")
_PARQUET_SUFFIXES = (".parquet", ".pq")


@dataclass(frozen=True)
class Document:
    """One document: plain ``text`` or chat ``messages``; ``where`` is ``file:line`` for errors."""

    text: str | None
    messages: tuple[dict[str, str], ...] | None
    where: str

    @property
    def content_hash(self) -> str:
        """sha256 of the content only (never the path), so moving files keeps sample ids."""
        if self.messages is not None:
            payload = json.dumps(list(self.messages), sort_keys=True, ensure_ascii=False)
            return hashlib.sha256(b"chat\0" + payload.encode()).hexdigest()
        return hashlib.sha256(b"text\0" + self.text.encode()).hexdigest()


@dataclass
class ReadStats:
    files: int = 0
    documents: int = 0
    skipped_empty: int = 0
    skipped_invalid_utf8: int = 0
    replaced_invalid_utf8: int = 0
    by_format: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "files": self.files,
            "documents": self.documents,
            "skipped_empty": self.skipped_empty,
            "skipped_invalid_utf8": self.skipped_invalid_utf8,
            "replaced_invalid_utf8": self.replaced_invalid_utf8,
        }


def detect_format(src: SourceFile, requested: str) -> str:
    """``requested`` unless it is ``auto``; then by suffix (compression suffixes ignored)."""
    if requested not in FORMATS:
        raise CorpusError(
            f"unknown corpus format {requested!r}; choose one of {', '.join(FORMATS)}"
        )
    if requested != "auto":
        return requested
    name = src.path.lower()
    for comp in (".gz", ".bz2", ".xz", ".zst", ".lz4"):
        if name.endswith(comp):
            name = name[: -len(comp)]
    if name.endswith(_PARQUET_SUFFIXES):
        return "parquet"
    if name.endswith(_JSONL_SUFFIXES):
        return "jsonl"  # chat is recognised per record (a "messages" list and no text field)
    if name.endswith(_TEXT_SUFFIXES) or "." not in name.rsplit("/", 1)[-1]:
        return "text"
    raise CorpusError(f"cannot tell the format of {src.url}; pass --format text|jsonl|parquet|chat")


INVALID_UTF8_MODES = ("skip", "replace")


def _decode(data: bytes, where: str, stats: ReadStats, invalid_utf8: str = "skip") -> str | None:
    """UTF-8 text, or None when invalid and skipped (counted); ``replace`` keeps the document
    with U+FFFD for each invalid byte sequence (counted too), so one bad byte in a scraped
    file does not drop the whole file."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        if invalid_utf8 == "replace":
            stats.replaced_invalid_utf8 += 1
            log.debug("%s: invalid UTF-8 (%s) replaced with U+FFFD", where, exc.reason)
            return data.decode("utf-8", errors="replace")
        stats.skipped_invalid_utf8 += 1
        log.warning(
            "skipping %s: invalid UTF-8 (%s); --invalid-utf8 replace keeps it", where, exc.reason
        )
        return None


def _keep(text: str, where: str, stats: ReadStats) -> bool:
    if not text.strip():
        stats.skipped_empty += 1
        log.debug("skipping %s: empty document", where)
        return False
    return True


def _messages(obj: Any, where: str) -> tuple[dict[str, str], ...]:
    msgs = obj.get("messages") if isinstance(obj, dict) else None
    if not isinstance(msgs, list) or not msgs:
        raise CorpusError(f"{where}: chat records need a non-empty 'messages' list")
    out = []
    for m in msgs:
        if not isinstance(m, dict) or not isinstance(m.get("role"), str):
            raise CorpusError(f"{where}: each message needs a 'role' and a 'content' string")
        content = m.get("content")
        if not isinstance(content, str):
            raise CorpusError(f"{where}: message content must be a string, got {content!r}")
        out.append({"role": m["role"], "content": content})
    return tuple(out)


def read_text(src: SourceFile, stats: ReadStats, invalid_utf8: str = "skip") -> Iterator[Document]:
    with src.open() as fh:
        data = fh.read()
    text = _decode(data, src.url, stats, invalid_utf8)
    if text is not None and _keep(text, src.url, stats):
        yield Document(text=text, messages=None, where=src.url)


def read_jsonl(
    src: SourceFile,
    stats: ReadStats,
    text_field: str,
    chat: bool | None,
    invalid_utf8: str = "skip",
) -> Iterator[Document]:
    """``chat=None`` decides per record: a ``messages`` list without ``text_field`` is chat."""
    with src.open() as raw:
        for lineno, line in enumerate(raw, 1):
            where = f"{src.url}:{lineno}"
            decoded = _decode(line, where, stats, invalid_utf8)
            if decoded is None or not decoded.strip():
                continue
            try:
                obj = json.loads(decoded)
            except json.JSONDecodeError as exc:
                raise CorpusError(
                    f"{where}: not valid JSON ({exc.msg}); is this a JSONL file?"
                ) from None
            is_chat = chat
            if is_chat is None:
                is_chat = isinstance(obj, dict) and text_field not in obj and "messages" in obj
            if is_chat:
                msgs = _messages(obj, where)
                if not any(m["content"].strip() for m in msgs):
                    stats.skipped_empty += 1
                    continue
                yield Document(text=None, messages=msgs, where=where)
                continue
            if not isinstance(obj, dict) or text_field not in obj:
                keys = sorted(obj)[:8] if isinstance(obj, dict) else type(obj).__name__
                raise CorpusError(
                    f"{where}: no field {text_field!r} (record has {keys}); pass "
                    "--text-field NAME, or --format chat for 'messages' records"
                )
            text = obj[text_field]
            if not isinstance(text, str):
                raise CorpusError(
                    f"{where}: field {text_field!r} is {type(text).__name__}, not a string"
                )
            if _keep(text, where, stats):
                yield Document(text=text, messages=None, where=where)


def read_parquet(
    src: SourceFile, stats: ReadStats, text_field: str, invalid_utf8: str = "skip"
) -> Iterator[Document]:
    import pyarrow.parquet as pq

    with src.fs.open(src.path, "rb") as fh:
        pf = pq.ParquetFile(fh)
        if text_field not in pf.schema_arrow.names:
            raise CorpusError(
                f"{src.url}: no column {text_field!r} (columns: {pf.schema_arrow.names}); "
                "pass --text-field NAME"
            )
        row = 0
        for batch in pf.iter_batches(columns=[text_field], batch_size=4096):
            for text in batch.column(0).to_pylist():
                row += 1
                where = f"{src.url}:row {row}"
                if text is None:
                    stats.skipped_empty += 1
                    continue
                if isinstance(text, bytes):
                    text = _decode(text, where, stats, invalid_utf8)
                    if text is None:
                        continue
                if _keep(text, where, stats):
                    yield Document(text=text, messages=None, where=where)


def read_documents(
    sources: Sequence[SourceFile],
    *,
    fmt: str = "auto",
    text_field: str = "text",
    stats: ReadStats | None = None,
    invalid_utf8: str = "skip",
) -> Iterator[Document]:
    """All documents of all sources, in order. Raises CorpusError when there are none.

    ``invalid_utf8``: ``skip`` (default) drops a document with invalid UTF-8, counted in
    ``stats.skipped_invalid_utf8``; ``replace`` keeps it with U+FFFD, counted in
    ``stats.replaced_invalid_utf8``."""
    if invalid_utf8 not in INVALID_UTF8_MODES:
        raise CorpusError(
            f"--invalid-utf8 {invalid_utf8!r}: choose one of {', '.join(INVALID_UTF8_MODES)}"
        )
    stats = stats if stats is not None else ReadStats()
    for src in sources:
        kind = detect_format(src, fmt)
        stats.files += 1
        if kind == "text":
            docs = read_text(src, stats, invalid_utf8)
        elif kind == "parquet":
            docs = read_parquet(src, stats, text_field, invalid_utf8)
        else:
            docs = read_jsonl(
                src, stats, text_field, True if kind == "chat" else None, invalid_utf8
            )
        for doc in docs:
            stats.documents += 1
            stats.by_format[kind] = stats.by_format.get(kind, 0) + 1
            yield doc
    if stats.documents == 0:
        raise CorpusError(
            f"the corpus holds no usable documents ({stats.files} file(s), "
            f"{stats.skipped_empty} empty and {stats.skipped_invalid_utf8} invalid-UTF-8 "
            "documents skipped); check --corpus, --format and --text-field"
        )
