"""Batches for a cross-tokenizer student: student tokens, and teacher targets moved onto them.

:class:`CrossTokenizerCollate` replaces :func:`logitcache.data.collate` when the student has
its own tokenizer. It runs in the DataLoader workers (retokenising is CPU work, overlapped
with training) and yields, for ``B`` rows of up to ``S`` student tokens:

=====================  ==============  ====================================================
key                    shape           meaning
=====================  ==============  ====================================================
``input_ids``          int64 [B, S]    student ids (pad: the student's pad id)
``attention_mask``     bool [B, S]
``labels``             int64 [B, S]    the student's next token where it is a target, -100
``label_bytes``        int64 [B, S]    text bytes of that next token (0: special / none)
``kd_mask``            bool [B, S]     a teacher target is aligned with this position
``topk_ids``           int64 [B, S, k] the aligned cache row's teacher ids (0 elsewhere)
``topk_logprobs``      f32 [B, S, k]   and log-probs (``-log k`` elsewhere, as in collate)
``tail_logmass``       f32 [B, S]      and tail (``PAD_TAIL_LOGMASS`` elsewhere)
``topk_student_ids``   int64 [B, S, k] with ``vocab_map``: student id of each teacher id, -1
=====================  ==============  ====================================================
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from logitcache.crosstok.align import Retokenizer
from logitcache.data.collate import IGNORE_INDEX, PAD_TAIL_LOGMASS
from logitcache.errors import ConfigError


class CrossTokenizerCollate:
    """Collate cached samples into student-side batches (picklable for DataLoader workers)."""

    def __init__(
        self,
        retokenizer: Retokenizer,
        *,
        pad_id: int | None = None,
        vocab_map: bool = False,
        max_len: int | None = None,
        sample_ids: bool = False,
    ):
        """``vocab_map`` adds ``topk_student_ids`` (GOLD); ``max_len`` crops student rows (a
        finer student tokenizer makes rows longer than the cache's, in tokens);
        ``sample_ids`` adds the ``sample_id`` list (trainer integrations)."""
        self.retokenizer = retokenizer
        self.max_len = max_len
        self.sample_ids = sample_ids
        student = retokenizer.student
        pad = pad_id if pad_id is not None else student.pad_token_id
        self.pad_id = int(pad if pad is not None else (student.eos_token_id or 0))
        self.vocab_map = retokenizer.vocab_map if vocab_map else None

    def __call__(self, samples: Sequence[dict[str, Any]]) -> dict[str, torch.Tensor]:
        if not samples:
            raise ConfigError("CrossTokenizerCollate needs at least one sample")
        k = samples[0]["topk_ids"].shape[1] if "topk_ids" in samples[0] else 0
        if k == 0:
            raise ConfigError(
                "cross-tokenizer distillation needs the teacher's top-k at each position, and "
                "this cache stores none (built with --top-k 0, sampled draws only). Rebuild "
                "the cache with --top-k K (e.g. 64), or train a same-tokenizer student with "
                "--loss rs_kd."
            )
        rows = self.retokenizer.align_rows([(s["input_ids"], s["loss_mask"]) for s in samples])
        if self.max_len is not None:
            rows = [r.crop(self.max_len) for r in rows]
        b, s_max = len(rows), max(1, max(len(r) for r in rows))
        input_ids = np.full((b, s_max), self.pad_id, np.int64)
        attention = np.zeros((b, s_max), bool)
        labels = np.full((b, s_max), IGNORE_INDEX, np.int64)
        label_bytes = np.zeros((b, s_max), np.int64)
        kd_mask = np.zeros((b, s_max), bool)
        topk_ids = np.zeros((b, s_max, k), np.int64)
        topk_lp = np.full((b, s_max, k), -math.log(k), np.float32)
        tail = np.full((b, s_max), PAD_TAIL_LOGMASS, np.float32)
        for i, (sample, row) in enumerate(zip(samples, rows)):
            n = len(row)
            if sample["topk_ids"].shape[1] != k:
                raise ConfigError("do not mix caches with different top_k in one batch")
            input_ids[i, :n] = row.input_ids
            attention[i, :n] = True
            if n > 1:
                target = row.targets[1:]
                labels[i, : n - 1] = np.where(target, row.input_ids[1:], IGNORE_INDEX)
                label_bytes[i, : n - 1] = np.where(target, row.piece_bytes[1:], 0)
            pos = row.teacher_pos
            on = pos >= 0
            kd_mask[i, :n] = on
            src = pos[on]
            topk_ids[i, :n][on] = sample["topk_ids"][src]
            topk_lp[i, :n][on] = sample["topk_logprobs"][src]
            tail[i, :n][on] = sample["tail_logmass"][src]
        out = {
            "input_ids": torch.from_numpy(input_ids),
            "attention_mask": torch.from_numpy(attention),
            "labels": torch.from_numpy(labels),
            "label_bytes": torch.from_numpy(label_bytes),
            "kd_mask": torch.from_numpy(kd_mask),
            "topk_ids": torch.from_numpy(topk_ids),
            "topk_logprobs": torch.from_numpy(topk_lp),
            "tail_logmass": torch.from_numpy(tail),
        }
        if self.vocab_map is not None:
            vm = self.vocab_map
            if topk_ids.size and int(topk_ids.max()) >= len(vm):  # ids past len(tokenizer)
                vm = np.concatenate([vm, np.full(int(topk_ids.max()) + 1 - len(vm), -1)])
            mapped = np.where(kd_mask[..., None], vm[topk_ids], -1)
            out["topk_student_ids"] = torch.from_numpy(mapped)
        if self.sample_ids:
            out["sample_id"] = [str(s.get("sample_id", "")) for s in samples]
        return out
