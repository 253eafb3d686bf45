"""Prompts JSONL -> rendered, tokenised prompts -> deterministic generation units.

A prompt record is ``{"prompt": "..."}`` or ``{"messages": [{"role", "content"}, ...]}``
(the corpus JSONL reader parses both). A plain prompt becomes one user turn; both are rendered
with the teacher's chat template and ``add_generation_prompt=True``, so the response starts
where the assistant's turn does. Teachers without a chat template get plain prompts verbatim
(chat records then fail with the reason).

Ids are content-derived: prompt key = the first 20 hex digits of the record's content hash
(``.N`` appended for repeats), sample id = ``<prompt key>-<index>``; a unit is a run of
``prompts_per_unit`` prompts with all their samples, named by the hash of its prompt keys.
Moving or renaming the prompts file therefore keeps ids, units and resumability.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from typing import Any

import numpy as np

from logitcache.corpus import Document, ReadStats, Row, Unit, expand_sources, read_documents
from logitcache.errors import CorpusError

log = logging.getLogger(__name__)

PROMPT_FIELD = "prompt"
KEY_CHARS = 20


@dataclass
class Prompt:
    key: str
    ids: np.ndarray  # int32 [P], rendered with the generation prompt
    messages: tuple[dict[str, str], ...] | None
    text: str | None


@dataclass
class PromptPlan:
    units: list[Unit]
    prompts: list[Prompt]
    fingerprint: str
    sources: list[str]
    skipped_long: int
    read_stats: ReadStats

    @property
    def samples(self) -> int:
        return sum(len(u.rows) for u in self.units)

    def corpus_section(self) -> dict[str, Any]:
        return {
            "fingerprint": self.fingerprint,
            "sources": self.sources[:100],
            "num_sources": len(self.sources),
            "format": "prompts",
            "prompts": len(self.prompts),
            "samples": self.samples,
            "skipped_long_prompts": self.skipped_long,
            **self.read_stats.as_dict(),
        }


def sample_id(key: str, index: int) -> str:
    return f"{key}-{index:04d}"


def split_sample_id(sid: str) -> tuple[str, int]:
    key, _, index = sid.rpartition("-")
    return key, int(index)


def render_prompt(tokenizer, doc: Document) -> str:
    """The text the teacher continues: chat-templated with the generation prompt if it can."""
    has_template = getattr(tokenizer, "chat_template", None) is not None
    if doc.messages is not None:
        if not has_template:
            raise CorpusError(
                f"{doc.where}: chat 'messages' need a teacher tokenizer with a chat template; "
                "this teacher has none, so give plain 'prompt' strings"
            )
        messages = list(doc.messages)
    elif has_template:
        messages = [{"role": "user", "content": doc.text}]
    else:
        return doc.text
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def plan_prompts(cfg, tokenizer) -> PromptPlan:
    """Read, render and tokenise every prompt of ``cfg.prompts``; cut them into units."""
    sources = expand_sources(cfg.prompts, cfg.output.storage_options)
    stats = ReadStats()
    docs = list(read_documents(sources, fmt="jsonl", text_field=PROMPT_FIELD, stats=stats))
    texts = [render_prompt(tokenizer, d) for d in docs]
    enc = tokenizer(texts, add_special_tokens=False, verbose=False)["input_ids"]
    seen: dict[str, int] = {}
    prompts: list[Prompt] = []
    skipped = 0
    for doc, ids in zip(docs, enc):
        if len(ids) > cfg.max_prompt_tokens:
            skipped += 1
            log.warning(
                "skipping %s: %d prompt tokens > --max-prompt-tokens %d",
                doc.where,
                len(ids),
                cfg.max_prompt_tokens,
            )
            continue
        key = doc.content_hash[:KEY_CHARS]
        repeat = seen.get(key, 0)
        seen[key] = repeat + 1
        if repeat:
            key = f"{key}.{repeat}"
        prompts.append(
            Prompt(
                key=key,
                ids=np.asarray(ids, dtype=np.int32),
                messages=doc.messages,
                text=doc.text,
            )
        )
    if not prompts:
        raise CorpusError(
            f"no usable prompts in {cfg.prompts} ({skipped} longer than --max-prompt-tokens)"
        )
    n = cfg.generation.n
    fp = hashlib.sha256(f"n={n};".encode())
    units: list[Unit] = []
    for a in range(0, len(prompts), cfg.prompts_per_unit):
        group = prompts[a : a + cfg.prompts_per_unit]
        h = hashlib.sha256(f"n={n}|".encode())
        rows = []
        for p in group:
            h.update(f"{p.key}:{len(p.ids)};".encode())
            fp.update(f"{p.key}:{len(p.ids)};".encode())
            rows += [
                Row(
                    sample_id=sample_id(p.key, i),
                    input_ids=p.ids,
                    loss_mask=np.zeros(len(p.ids), dtype=np.bool_),
                )
                for i in range(n)
            ]
        units.append(Unit(name="g-" + h.hexdigest()[:24], rows=rows, documents=len(group)))
    log.info(
        "planned %d unit(s): %d prompts x %d = %d samples (%d prompt tokens)",
        len(units),
        len(prompts),
        n,
        len(prompts) * n,
        sum(len(p.ids) for p in prompts),
    )
    return PromptPlan(
        units=units,
        prompts=prompts,
        fingerprint=fp.hexdigest(),
        sources=[s.url for s in sources],
        skipped_long=skipped,
        read_stats=stats,
    )
