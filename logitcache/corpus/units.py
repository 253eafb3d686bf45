"""Pack tokenised documents into rows and group them into deterministic work units.

A *unit* is a run of whole documents (the last one possibly cut by ``max_tokens``) holding about
``unit_tokens`` tokens; it becomes exactly one shard. Its name is a hash of its content (document
hashes and token counts) and the packing parameters, so re-running the same build over the same
corpus plans the same units, and a resumed build recognises the ones already committed.

Packing (``seq_len`` windows):

- ``pack`` (default): the unit's documents are concatenated with EOS after each one and cut
  into ``seq_len`` windows; sample id = ``<unit>-<window>``.
- ``document``: one document per row (EOS appended); documents longer than ``seq_len`` are split
  into several windows; sample id = ``<document hash>-<window>``.

Per the ALIGNMENT contract ``loss_mask[t]`` is the target flag of token ``t+1``; the last
position of a row is never a target. Windows with no target at all are dropped (counted).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from logitcache.corpus.tokenize import TokenizedDoc
from logitcache.errors import ConfigError

PACKING_MODES = ("pack", "document")
DOC_KEY_CHARS = 20


@dataclass(frozen=True, kw_only=True)
class PackingConfig:
    """How documents become rows and rows become units."""

    seq_len: int
    packing: str = "pack"
    eos_id: int | None = None
    unit_tokens: int = 65536
    max_tokens: int | None = None

    def __post_init__(self) -> None:
        if self.seq_len < 2:
            raise ConfigError(
                f"seq_len={self.seq_len}: rows need at least 2 tokens (--seq-len >= 2)"
            )
        if self.packing not in PACKING_MODES:
            raise ConfigError(f"packing={self.packing!r}; choose one of {', '.join(PACKING_MODES)}")
        if self.packing == "pack" and self.eos_id is None:
            raise ConfigError(
                "packing documents needs an EOS token between them, and the tokenizer has none; "
                "use --packing document"
            )
        if self.unit_tokens < 1:
            raise ConfigError(f"unit_tokens={self.unit_tokens} must be >= 1")
        if self.max_tokens is not None and self.max_tokens < 2:
            raise ConfigError(f"max_tokens={self.max_tokens} must be >= 2 (or unset)")


@dataclass
class Row:
    sample_id: str
    input_ids: np.ndarray  # int32 [T]
    loss_mask: np.ndarray  # bool [T]


@dataclass
class Unit:
    """One unit of work: its name and the rows the teacher will score."""

    name: str
    rows: list[Row]
    documents: int

    @property
    def tokens(self) -> int:
        return sum(len(r.input_ids) for r in self.rows)


def windows(
    ids: np.ndarray, targets: np.ndarray, seq_len: int
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Cut a token stream into ``seq_len`` windows with next-token loss masks."""
    for a in range(0, len(ids), seq_len):
        w = ids[a : a + seq_len]
        mask = np.zeros(len(w), dtype=np.bool_)
        mask[:-1] = targets[a + 1 : a + len(w)]
        yield w, mask


@dataclass
class PlanStats:
    documents: int = 0
    tokens: int = 0
    rows: int = 0
    units: int = 0
    duplicate_documents: int = 0
    dropped_windows: int = 0
    truncated: bool = False

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class UnitPlanner:
    """Feed documents in corpus order with :meth:`add`; completed units come back as they fill.

    Deterministic: the units depend only on the documents' content and order and the config.
    """

    cfg: PackingConfig
    stats: PlanStats = field(default_factory=PlanStats)

    def __post_init__(self) -> None:
        self._seen: dict[str, int] = {}
        self._docs: list[tuple[str, TokenizedDoc]] = []
        self._unit_tokens = 0
        self._fp = hashlib.sha256(
            f"seq_len={self.cfg.seq_len};packing={self.cfg.packing};".encode()
        )

    @property
    def exhausted(self) -> bool:
        """True once ``max_tokens`` is reached: feed no more documents."""
        return self.stats.truncated

    @property
    def fingerprint(self) -> str:
        """Hash of the planned documents' content hashes and token counts (never paths)."""
        return self._fp.hexdigest()

    def _key(self, content_hash: str) -> str:
        key = content_hash[:DOC_KEY_CHARS]
        n = self._seen.get(key, 0)
        self._seen[key] = n + 1
        if n:
            self.stats.duplicate_documents += 1
            return f"{key}.{n}"  # same text twice: distinct, still content-derived ids
        return key

    def add(self, content_hash: str, doc: TokenizedDoc) -> list[Unit]:
        if self.exhausted:
            return []
        ids, targets = doc.ids, doc.targets
        if self.cfg.eos_id is not None:
            ids = np.append(ids, np.int32(self.cfg.eos_id))
            targets = np.append(targets, targets.all() if len(targets) else True)
        if self.cfg.max_tokens is not None:
            room = self.cfg.max_tokens - self.stats.tokens
            if len(ids) >= room:
                ids, targets = ids[:room], targets[:room]
                self.stats.truncated = True
        if len(ids) == 0:
            return []
        key = self._key(content_hash)
        self._fp.update(f"{key}:{len(ids)};".encode())
        self._docs.append((key, TokenizedDoc(ids=ids.astype(np.int32), targets=targets)))
        self._unit_tokens += len(ids)
        self.stats.documents += 1
        self.stats.tokens += len(ids)
        if self._unit_tokens >= self.cfg.unit_tokens or self.exhausted:
            return self._flush()
        return []

    def finish(self) -> list[Unit]:
        return self._flush() if self._docs else []

    def _flush(self) -> list[Unit]:
        docs, self._docs, self._unit_tokens = self._docs, [], 0
        h = hashlib.sha256(f"{self.cfg.seq_len}|{self.cfg.packing}|".encode())
        for key, d in docs:
            h.update(f"{key}:{len(d)};".encode())
        name = "u-" + h.hexdigest()[:24]
        rows: list[Row] = []
        if self.cfg.packing == "pack":
            ids = np.concatenate([d.ids for _, d in docs])
            targets = np.concatenate([d.targets for _, d in docs])
            pieces = [
                (f"{name}-{w:05d}", win)
                for w, win in enumerate(windows(ids, targets, self.cfg.seq_len))
            ]
        else:
            pieces = [
                (f"{key}-{w:04d}", win)
                for key, d in docs
                for w, win in enumerate(windows(d.ids, d.targets, self.cfg.seq_len))
            ]
        for sid, (w_ids, w_mask) in pieces:
            if len(w_ids) < 2 or not w_mask.any():
                self.stats.dropped_windows += 1
                continue
            rows.append(Row(sample_id=sid, input_ids=w_ids, loss_mask=w_mask))
        if not rows:
            return []
        self.stats.rows += len(rows)
        self.stats.units += 1
        return [Unit(name=name, rows=rows, documents=len(docs))]
