"""Teacher rows to student rows: retokenise the cached text and align positions by byte spans.

A cached row is teacher token ids. :class:`Retokenizer` spells them as bytes
(:mod:`logitcache.crosstok.vocab`), cuts the row at special tokens, tokenises each text run
with the student's tokenizer, and places every teacher and student token on one byte axis of
the row (a special token takes one virtual unit, so the boundaries on each side of it stay
distinct). Then:

* **KD positions.** Row ``t`` of the cache holds the teacher's distribution for the token
  that *starts* where teacher token ``t`` ends. Student position ``s`` gets that target when
  its token ends at the same byte and its next token starts there too: both models have read
  exactly the same text and are predicting the next piece of it. Positions inside a teacher
  token (the student splits finer) or inside a student token have no teacher target; they
  still get the student's own cross-entropy.
* **Targets.** A student token is a training target when the teacher token holding its first
  byte is one (``loss_mask`` of the position before it): chat masks carry over by text.
* **Byte-level pieces.** Byte-level BPE pieces may end inside a UTF-8 character (an emoji is
  often two or three pieces). Boundaries are byte offsets, so such a boundary aligns when the
  student splits there too, and never otherwise. Bytes of a character cut off at a packed
  row's edge cannot be tokenised as text; they stay uncovered (no student token, no target).
* **Student spans.** When the student's own pieces spell the run's bytes exactly (byte-level
  or SentencePiece students), spans come from the pieces; otherwise from the tokenizer's
  character offsets, partitioned by their ends (so trimmed leading spaces land in the next
  token, as they do in the pieces).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from logitcache.crosstok.vocab import TokenTable, special_map, token_bytes, vocabulary_map
from logitcache.errors import ConfigError

log = logging.getLogger(__name__)
_SURROGATE = re.compile("[\udc80-\udcff]")  # bytes that surrogateescape could not decode


@dataclass
class Aligned:
    """One row on the student's side; ``S`` student tokens."""

    input_ids: np.ndarray  # int64 [S] student ids
    targets: np.ndarray  # bool [S]: token u is a training target (predicted at u - 1)
    teacher_pos: np.ndarray  # int64 [S]: cache row index whose target position s shares, or -1
    piece_bytes: np.ndarray  # int64 [S]: text bytes token u covers (0 for special tokens)

    def __len__(self) -> int:
        return len(self.input_ids)

    def crop(self, n: int) -> Aligned:
        """The first ``n`` student tokens (the last kept position loses its KD target: its
        next token is gone)."""
        if len(self) <= n:
            return self
        pos = self.teacher_pos[:n].copy()
        pos[-1] = -1
        return Aligned(self.input_ids[:n], self.targets[:n], pos, self.piece_bytes[:n])


def _utf8_core(data: bytes) -> tuple[int, int]:
    """``(lo, hi)``: ``data[lo:hi]`` drops continuation bytes at the start and an unfinished
    character at the end (a packed row cut through a character)."""
    lo = 0
    while lo < min(3, len(data)) and 0x80 <= data[lo] < 0xC0:
        lo += 1
    hi = len(data)
    for back in range(1, min(4, hi - lo) + 1):
        b = data[hi - back]
        if b < 0x80:
            break
        if b >= 0xC0:  # a lead byte: complete only if its sequence fits
            need = 2 if b < 0xE0 else 3 if b < 0xF0 else 4
            if back < need:
                hi -= back
            break
    return lo, hi


def _char_bytes(text: str) -> np.ndarray:
    """UTF-8 length of each character; a lone surrogate (an escaped bad byte) counts 1."""
    cp = np.frombuffer(text.encode("utf-32-le", "surrogatepass"), np.uint32)
    n = 1 + (cp >= 0x80) + (cp >= 0x800) + (cp >= 0x10000)
    n[(cp >= 0xD800) & (cp < 0xE000)] = 1
    return n.astype(np.int64)


class Retokenizer:
    """Turns cached teacher rows into aligned student rows (picklable: DataLoader workers).

    ``teacher`` and ``student`` are Hugging Face fast tokenizers. ``vocab_map`` (teacher id ->
    student id, -1 where no one-to-one string match) is built on first use, for GOLD.
    """

    def __init__(self, teacher: Any, student: Any):
        if not getattr(student, "is_fast", False):
            raise ConfigError(
                "the student's tokenizer must be a fast (Rust) tokenizer: alignment needs its "
                "offsets. Save it with tokenizer.json (PreTrainedTokenizerFast)."
            )
        self.student = student
        self.teacher_table: TokenTable = token_bytes(teacher)
        self.student_table: TokenTable = token_bytes(student)
        self.specials = special_map(self.teacher_table, self.student_table)
        self._vocab_map: np.ndarray | None = None
        self.stats = {"unmapped_specials": 0}

    @property
    def vocab_map(self) -> np.ndarray:
        if self._vocab_map is None:
            self._vocab_map = vocabulary_map(self.teacher_table, self.student_table)
        return self._vocab_map

    def _encode_runs(self, texts: list[str]) -> list[tuple[list[int], list[tuple[int, int]]]]:
        if not texts:
            return []
        enc = self.student(
            texts,
            add_special_tokens=False,
            split_special_tokens=True,  # text that spells a special token stays text
            return_offsets_mapping=True,
            verbose=False,
        )
        return list(zip(enc["input_ids"], enc["offset_mapping"]))

    def _run_spans(self, data: bytes, text: str, ids: list[int], offsets) -> np.ndarray:
        """Byte end of each student token within its run."""
        st = self.student_table
        arr = np.asarray(ids, np.int64)
        lengths = st.lengths[arr] if arr.size else arr
        if int(lengths.sum()) == len(data) and b"".join(map(st.pieces.__getitem__, ids)) == data:
            return np.cumsum(lengths)
        char_end = np.concatenate([[0], np.cumsum(_char_bytes(text))])
        ends = np.asarray([e for _, e in offsets], np.int64).clip(0, len(text))
        ends = np.maximum.accumulate(char_end[ends]) if ends.size else ends
        if ends.size:
            ends[-1] = len(data)
        return ends

    def align(self, input_ids: np.ndarray, loss_mask: np.ndarray) -> Aligned:
        """The student's view of one cached row (``input_ids``, ``loss_mask`` of length T)."""
        return self.align_rows([(input_ids, loss_mask)])[0]

    def align_rows(self, rows: Sequence[tuple[np.ndarray, np.ndarray]]) -> list[Aligned]:
        """:meth:`align` for many rows, with one call into the student's tokenizer."""
        prepared = [self._split(ids) for ids, _ in rows]
        texts = [text for p in prepared for _, _, text in p[1]]
        encoded = iter(self._encode_runs(texts))
        out = []
        for (ids, mask), (order, runs, t_start, t_end) in zip(rows, prepared):
            row_enc = [next(encoded) for _ in runs]
            out.append(self._assemble(ids, mask, order, runs, row_enc, t_start, t_end))
        return out

    def _split(self, input_ids):
        """A row's text runs between special tokens, and the byte axis of its teacher tokens."""
        ids = np.asarray(input_ids, np.int64)
        tt = self.teacher_table
        if ids.size and int(ids.max()) >= len(tt):
            raise ConfigError(
                f"cached token id {int(ids.max())} is outside the teacher tokenizer "
                f"({len(tt)} ids); pass the tokenizer the cache was built with"
            )
        spec = tt.special[ids]
        width = np.where(spec, 1, tt.lengths[ids])
        t_end = np.cumsum(width)
        t_start = t_end - width
        runs: list[tuple[int, bytes, str]] = []  # (byte base, core bytes, text)
        order: list[tuple[str, int]] = []  # ("run", index into runs) | ("special", j)
        pieces = tt.pieces
        id_list = ids.tolist()
        cuts = np.flatnonzero(spec).tolist()
        start = 0
        for stop in [*cuts, len(id_list)]:
            if stop > start:  # a text run [start, stop)
                data = b"".join(map(pieces.__getitem__, id_list[start:stop]))
                lo, hi = _utf8_core(data)
                core = data[lo:hi]
                if core:
                    try:
                        text = core.decode("utf-8")
                    except UnicodeDecodeError:  # bad bytes inside: one replacement char each
                        text = core.decode("utf-8", "surrogateescape")
                        text = _SURROGATE.sub("\ufffd", text)
                    order.append(("run", len(runs)))
                    runs.append((int(t_start[start]) + lo, core, text))
            if stop < len(id_list):
                order.append(("special", stop))
            start = stop + 1
        return order, runs, t_start, t_end

    def _assemble(self, input_ids, loss_mask, order, runs, encoded, t_start, t_end) -> Aligned:
        ids = np.asarray(input_ids, np.int64)
        mask = np.asarray(loss_mask, bool)
        n = len(ids)
        s_ids: list[np.ndarray] = []
        s_start: list[np.ndarray] = []
        s_end: list[np.ndarray] = []
        s_bytes: list[np.ndarray] = []
        for kind, i in order:
            if kind == "special":
                s_id = self.specials.get(int(ids[i]))
                if s_id is None:
                    self.stats["unmapped_specials"] += 1
                    continue
                s_ids.append(np.asarray([s_id], np.int64))
                s_start.append(t_start[i : i + 1])
                s_end.append(t_end[i : i + 1])
                s_bytes.append(np.zeros(1, np.int64))
                continue
            base, core, text = runs[i]
            r_ids, offsets = encoded[i]
            if not r_ids:
                continue
            ends = self._run_spans(core, text, r_ids, offsets)
            starts = np.concatenate([[0], ends[:-1]])
            s_ids.append(np.asarray(r_ids, np.int64))
            s_start.append(base + starts)
            s_end.append(base + ends)
            s_bytes.append(ends - starts)
        if not s_ids:
            empty = np.zeros(0, np.int64)
            return Aligned(empty, np.zeros(0, bool), empty, empty)
        out_ids = np.concatenate(s_ids)
        starts = np.concatenate(s_start)
        ends = np.concatenate(s_end)
        piece_bytes = np.concatenate(s_bytes)

        # a student token is a target when the teacher token holding its first byte is one
        target_token = np.zeros(n, bool)
        target_token[1:] = mask[:-1]
        holder = np.searchsorted(t_end, starts, side="right").clip(max=max(n - 1, 0))
        targets = target_token[holder] & (ends > starts)

        # KD: student position s and teacher row t end at the same byte, and the next student
        # token starts right there (no uncovered bytes or unmapped special in between)
        teacher_pos = np.full(len(out_ids), -1, np.int64)
        if len(out_ids) > 1 and n:
            t = np.searchsorted(t_end, ends[:-1])
            t_ok = t < n
            t_c = t.clip(max=n - 1)
            ok = (
                t_ok
                & (t_end[t_c] == ends[:-1])
                & (starts[1:] == ends[:-1])
                & (ends[1:] > starts[1:])
                & mask[t_c]
                & targets[1:]
            )
            teacher_pos[:-1] = np.where(ok, t_c, -1)
        return Aligned(out_ids, targets, teacher_pos, piece_bytes)
