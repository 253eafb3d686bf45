"""Response generation with a transformers teacher: a plain KV-cached sampling loop.

Why not ``model.generate``: it draws from one global RNG for the whole batch, so a response
would depend on which other prompts share its batch (and thus on ``--workers``, resumption and
batch size). Here every row samples with its own ``torch.Generator`` seeded from
``(--seed, sample id)``, so a (prompt, index) gets the same response however it is batched,
up to fp rounding in the padded batch matmuls. Rows are left-padded with explicit position
ids; the sampling distribution is the raw logits / temperature, cut to the top-p nucleus.
The response includes the end-of-sequence token when the teacher emits one.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import torch

from logitcache.generate.config import GenerationParams

log = logging.getLogger(__name__)


def stop_ids(teacher) -> set[int]:
    """End-of-sequence ids: the tokenizer's EOS and the model's generation-config EOS ids."""
    out: set[int] = set()
    eos = getattr(teacher.tokenizer, "eos_token_id", None)
    if eos is not None:
        out.add(int(eos))
    gen_cfg = getattr(getattr(teacher, "model", None), "generation_config", None)
    extra = getattr(gen_cfg, "eos_token_id", None)
    if isinstance(extra, int):
        out.add(extra)
    elif isinstance(extra, (list, tuple)):
        out.update(int(e) for e in extra)
    return out


def sample_next(
    logits: torch.Tensor, params: GenerationParams, generators: Sequence[torch.Generator]
) -> torch.Tensor:
    """One token per row of ``logits`` [B, V]: greedy at temperature 0, else a draw from the
    top-p nucleus of softmax(logits / temperature) with that row's generator."""
    logits = logits.float()
    if params.temperature == 0:
        return logits.argmax(dim=-1)
    probs = torch.softmax(logits / params.temperature, dim=-1)
    if params.top_p < 1.0:
        sorted_p, order = probs.sort(dim=-1, descending=True)
        # Keep the smallest prefix whose mass reaches top_p (the first token always stays).
        drop = (sorted_p.cumsum(dim=-1) - sorted_p) >= params.top_p
        sorted_p = sorted_p.masked_fill(drop, 0.0)
        probs = torch.zeros_like(probs).scatter_(-1, order, sorted_p)
    out = torch.empty(len(generators), dtype=torch.long, device=logits.device)
    for i, gen in enumerate(generators):
        out[i] = torch.multinomial(probs[i], 1, generator=gen)[0]
    return out


class HFGenerator:
    """Writes responses with a loaded :class:`~logitcache.teachers.hf.HFTeacher`."""

    def __init__(self, teacher, params: GenerationParams):
        self.teacher = teacher
        self.params = params
        self.model = teacher.model
        self.device = teacher.device
        self.stop = stop_ids(teacher)
        self.pad_id = int(teacher.pad_id)

    @torch.inference_mode()
    def generate(self, prompts: Sequence[np.ndarray], seeds: Sequence[int]) -> list[np.ndarray]:
        """Response token ids (int32) for each prompt, sampled with its seed."""
        rows = len(prompts)
        width = max(len(p) for p in prompts)
        ids = torch.full((rows, width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((rows, width), dtype=torch.long)
        for j, p in enumerate(prompts):
            ids[j, width - len(p) :] = torch.from_numpy(np.asarray(p, np.int64))
            mask[j, width - len(p) :] = 1
        ids, mask = ids.to(self.device), mask.to(self.device)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        generators = [torch.Generator(device=self.device).manual_seed(int(s)) for s in seeds]
        out = self.model(
            input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True,
            logits_to_keep=1,
        )  # fmt: skip
        past = out.past_key_values
        next_pos = positions[:, -1:] + 1
        responses: list[list[int]] = [[] for _ in range(rows)]
        done = [False] * rows
        for step in range(self.params.max_new_tokens):
            tokens = sample_next(out.logits[:, -1, :], self.params, generators)
            # One device->host copy per step: the stop test needs the tokens on the host.
            host = tokens.cpu().tolist()
            for j, tok in enumerate(host):
                if not done[j]:
                    responses[j].append(tok)
                    done[j] = tok in self.stop
            if all(done) or step == self.params.max_new_tokens - 1:
                break
            mask = torch.cat([mask, torch.ones((rows, 1), dtype=mask.dtype, device=mask.device)], 1)
            out = self.model(
                input_ids=tokens[:, None], attention_mask=mask, position_ids=next_pos,
                past_key_values=past, use_cache=True, logits_to_keep=1,
            )  # fmt: skip
            past = out.past_key_values
            next_pos = next_pos + 1
        return [np.asarray(r, dtype=np.int32) for r in responses]
