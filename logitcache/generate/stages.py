"""The generate stage: prompt rows -> teacher responses -> scored prompt+response rows.

:class:`GenerateScorer` takes the arguments of capture's :class:`~logitcache.capture.stages.Scorer`
and has its interface (``score_rows``, ``score_blob``, ``teacher``, ``busy_s``, ``ready_at``),
so a :class:`~logitcache.capture.stages.ScoreStage` naming it runs a generation on either
executor, with capture's encode and commit stages, unchanged.

Soft labels come from a *scoring pass*: after a batch of responses is written, the full
prompt+response rows go through ``Teacher.score`` (the code path of ``logitcache build``). That
costs one extra prefill-style forward over each sequence, small next to token-by-token
decoding, and it makes the stored distributions exactly the T=1 unprocessed teacher
distributions of a direct forward pass (temperature and top-p only shape the *sampling*), for
every backend alike.
"""

from __future__ import annotations

import hashlib
import time
from typing import Any

import numpy as np

from logitcache.capture.stages import Scorer, token_batches
from logitcache.capture.transport import pack_rows, unpack_rows
from logitcache.generate.config import GenerationParams


def generation_seed(seed: int, sample_id: str) -> int:
    """Seed of one sample's sampler: from ``--seed`` and its content-derived id only."""
    digest = hashlib.sha256(f"{seed}\0{sample_id}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def full_row(sample_id: str, prompt: np.ndarray, response: np.ndarray) -> dict[str, Any]:
    """Prompt + response with the next-token loss mask: ``loss_mask[t]`` iff token t+1 is a
    response token (so positions P-1 .. T-2 are targets, the last position never)."""
    ids = np.concatenate([np.asarray(prompt, np.int32), np.asarray(response, np.int32)])
    mask = np.zeros(len(ids), dtype=np.bool_)
    mask[len(prompt) - 1 : len(ids) - 1] = True
    return {"sample_id": sample_id, "input_ids": ids, "loss_mask": mask}


def make_generator(teacher, params: GenerationParams, backend: str, top_k: int):
    if backend == "vllm":
        from logitcache.generate.vllm import VLLMGenerator

        return VLLMGenerator(teacher, params, top_k=top_k)
    from logitcache.generate.hf import HFGenerator

    return HFGenerator(teacher, params)


class GenerateScorer:
    """One loaded teacher that writes responses for prompt rows and scores the results."""

    def __init__(
        self,
        teacher_config: Any,
        *,
        generation: GenerationParams | dict,
        top_k: int,
        rs_samples: int,
        batch_tokens: int,
        threads: int | None = None,
        teacher: Any = None,
    ):
        if isinstance(generation, dict):
            generation = GenerationParams(**generation)
        self.params = generation
        self.scorer = Scorer(
            teacher_config,
            top_k=top_k,
            rs_samples=rs_samples,
            batch_tokens=batch_tokens,
            threads=threads,
            teacher=teacher,
        )
        self.teacher = self.scorer.teacher
        self.batch_tokens = batch_tokens
        self.generator = make_generator(self.teacher, generation, teacher_config.backend, top_k)
        self.busy_s = 0.0
        self.ready_at = self.scorer.ready_at

    def generate_rows(self, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Prompt rows (``input_ids`` = the prompt) -> full rows with their loss masks."""
        out: list[dict[str, Any] | None] = [None] * len(rows)
        # KV-cache budget: each row grows to prompt + max_new_tokens.
        lengths = [len(r["input_ids"]) + self.params.max_new_tokens for r in rows]
        for idx in token_batches(lengths, self.batch_tokens):
            responses = self.generator.generate(
                [rows[i]["input_ids"] for i in idx],
                [generation_seed(self.params.seed, rows[i]["sample_id"]) for i in idx],
            )
            for i, resp in zip(idx, responses):
                out[i] = full_row(rows[i]["sample_id"], rows[i]["input_ids"], resp)
        return out  # type: ignore[return-value]

    def score_rows(self, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        t0 = time.perf_counter()
        scored = self.scorer.score_rows(self.generate_rows(rows))
        self.busy_s += time.perf_counter() - t0
        return scored

    def score_blob(self, blob: bytes) -> bytes:
        return pack_rows(self.score_rows(unpack_rows(blob)))
