"""The distillation benchmark's scales: what each one trains, on what, and what it costs.

* ``small``: the plumbing setting (Python's docs only, 32k tokens x 2 epochs, ``small`` student).
  Too small to separate the arms; kept because it runs in minutes.
* ``medium``: for an idle 2-core CPU, about 90 minutes. Python's docs plus the docstrings of
  the standard library (>= 250k unique training tokens, one epoch, 256 optimiser steps), the
  ``draft`` student (narrow and cheap: its cost is the 49,152-wide output layer).
* ``gpu``: for one H200, about 8 minutes. Docs plus the standard library's source text
  (~10M unique tokens, so two epochs reach >= 20M training tokens), the ``small`` student.

``dry(scale)`` shrinks any scale to seconds while keeping its code path (its corpus, its epoch
rule, its seeds rule, generation and quantisation), so the gpu path is tested on a CPU.
:func:`flop_estimate` gives the FLOPs behind the wall-time estimates of docs/benchmarks.md.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace


@dataclass(frozen=True, kw_only=True)
class Scale:
    """One benchmark size. ``min_train_tokens``: epochs are raised until the run has seen at
    least this many training tokens (the corpus decides how many unique tokens exist)."""

    name: str
    corpus: str  # pydoc | docs | docs+source (see _distill_data.split_corpus)
    student: str
    train_tokens: int
    heldout_tokens: int
    seq_len: int
    epochs: int
    batch_size: int
    lr: float
    warmup: int
    evals: int
    seeds: int  # seeds for arms whose seed-0 held-out CE is within 1% of another arm's
    prompts: int  # held-out prompts for the assisted-generation measurement
    prompt_len: int
    new_tokens: int
    paired_steps: int
    min_train_tokens: int = 0
    num_workers: int = 0
    checkpoint_every: int = 16

    def __post_init__(self) -> None:
        if self.corpus not in ("pydoc", "docs", "docs+source"):
            raise ValueError(f"scale {self.name!r}: unknown corpus {self.corpus!r}")
        for field in ("train_tokens", "heldout_tokens", "epochs", "batch_size", "evals", "seeds"):
            if getattr(self, field) < 1:
                raise ValueError(f"scale {self.name!r}: {field} must be >= 1")
        if self.seq_len < 8 or self.prompt_len >= self.seq_len:
            raise ValueError(f"scale {self.name!r}: need 8 <= prompt_len < seq_len")

    def epochs_for(self, unique_tokens: int) -> int:
        return max(self.epochs, math.ceil(self.min_train_tokens / max(1, unique_tokens)))


SCALES: dict[str, Scale] = {
    "small": Scale(
        name="small", corpus="pydoc", student="small", train_tokens=32768, heldout_tokens=2048,
        seq_len=256, epochs=2, batch_size=4, lr=2e-3, warmup=4, evals=4, seeds=2,
        prompts=8, prompt_len=32, new_tokens=16, paired_steps=8,
    ),
    "medium": Scale(
        name="medium", corpus="docs", student="draft", train_tokens=262144, heldout_tokens=4096,
        seq_len=256, epochs=1, batch_size=4, lr=3e-3, warmup=16, evals=8, seeds=2,
        prompts=32, prompt_len=64, new_tokens=32, paired_steps=16,
    ),
    "gpu": Scale(
        name="gpu", corpus="docs+source", student="small", train_tokens=10_485_760,
        heldout_tokens=16384, seq_len=512, epochs=1, batch_size=32, lr=2e-3, warmup=50,
        evals=10, seeds=2, prompts=32, prompt_len=64, new_tokens=64, paired_steps=16,
        min_train_tokens=20_000_000, num_workers=4, checkpoint_every=100,
    ),
}  # fmt: skip


def dry(scale: Scale, size: str) -> Scale:
    """``scale`` at ``size`` ("tiny"): the same corpus and rules, seconds of work."""
    if size != "tiny":
        raise ValueError(f"--dry-size {size!r}: only 'tiny' is defined")
    return replace(
        scale, name=f"{scale.name}-dry-tiny", student="tiny", train_tokens=512,
        heldout_tokens=128, seq_len=64, batch_size=4, warmup=2, evals=2, prompts=2,
        prompt_len=16, new_tokens=8, paired_steps=2, checkpoint_every=1,
        min_train_tokens=1024 if scale.min_train_tokens else 0, num_workers=0,
    )  # fmt: skip


def flop_estimate(
    scale: Scale, *, unique_tokens: int, student_params: int, teacher_params: int, runs: int
) -> dict[str, float]:
    """Forward+backward FLOPs (6 N per token) of ``runs`` student trainings, 2 N per token for
    the teacher in capture and in the online-KD runs (assumed 2 of them: 2 seeds)."""
    train = unique_tokens * scale.epochs_for(unique_tokens)
    return {
        "train_tokens_per_run": train,
        "student_flops": 6.0 * student_params * train * runs,
        "online_teacher_flops": 2.0 * teacher_params * train * 2,
        "capture_flops": 2.0 * teacher_params * (unique_tokens + scale.heldout_tokens),
    }
