"""Training a student whose tokenizer is not the cache's: setup, loss and held-out metrics.

``logitcache train --cross-tokenizer uld|gold --student DIR`` takes the student *and its own
tokenizer* from DIR, loads the teacher's tokenizer (named by the manifest, checked against its
``vocab_sha256``) to spell the cached ids as text, and retokenises every row in the DataLoader
workers (:class:`logitcache.crosstok.CrossTokenizerCollate`). Nothing about the cache changes:
the same cache serves same-tokenizer and cross-tokenizer students.

Held-out metrics are per *student* token and per byte of text: ``eval_ce`` (nats per student
token), ``eval_bpb`` (bits per byte of the target tokens' text: comparable across tokenizers),
``eval_uld`` (bucketed ULD at aligned positions, whatever the training method),
``eval_gold`` (with ``gold``) and ``eval_kd_coverage`` (share of student targets that have a
teacher target).
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import torch

from logitcache.errors import ConfigError, LogitCacheError, VocabularyMismatchError
from logitcache.format import Manifest, open_cache
from logitcache.losses.cross_tokenizer import cross_tokenizer_loss, gold, uld
from logitcache.train.distributed import all_reduce_sum

log = logging.getLogger(__name__)

ROUNDTRIP_ROWS = 4  # cached rows spelled both ways before training starts


def load_student_with_tokenizer(spec: str) -> tuple[torch.nn.Module, Any]:
    """The student model and *its own* tokenizer from a directory or hub id."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from logitcache.train.student import PRESETS

    if spec in PRESETS:
        raise ConfigError(
            f"--student {spec} is built on the teacher's vocabulary; --cross-tokenizer needs "
            "--student DIR, a directory holding a transformers model and its own tokenizer "
            "(model.save_pretrained(DIR); tokenizer.save_pretrained(DIR))"
        )
    try:
        tokenizer = AutoTokenizer.from_pretrained(spec, trust_remote_code=False)
    except (OSError, ValueError, TypeError) as exc:
        raise ConfigError(
            f"cannot load the tokenizer of student {spec!r} ({type(exc).__name__}: {exc}). "
            "--cross-tokenizer needs the student's own tokenizer: save it next to the model "
            "with tokenizer.save_pretrained(DIR) (a tokenizer.json)."
        ) from None
    try:
        model = AutoModelForCausalLM.from_pretrained(spec, trust_remote_code=False)
    except (OSError, ValueError) as exc:
        raise ConfigError(
            f"cannot load student {spec!r}: {exc}. Give a directory written by "
            "save_pretrained, or a hub id."
        ) from None
    rows = int(model.get_input_embeddings().weight.shape[0])
    if rows < len(tokenizer):
        raise VocabularyMismatchError(
            f"student {spec!r} has {rows} embedding rows but its tokenizer has "
            f"{len(tokenizer)} ids; call model.resize_token_embeddings(len(tokenizer))"
        )
    return model, tokenizer


def load_teacher_tokenizer(manifest: Manifest, override: str | None = None) -> Any:
    """The tokenizer the cache was built with, checked against the manifest's vocab_sha256."""
    from logitcache.train.student import vocab_sha256

    expected = manifest.tokenizer.get("vocab_sha256")
    specs = (
        [override]
        if override
        else list(
            dict.fromkeys(
                filter(None, (manifest.teacher.get("name"), manifest.teacher.get("source")))
            )
        )
    )
    if not expected and not override:
        raise ConfigError(
            "this cache's manifest has no tokenizer.vocab_sha256, so the tokenizer that "
            "spells its token ids cannot be checked; pass --teacher-tokenizer PATH (the "
            "tokenizer the cache was built with)"
        )
    errors = []
    for spec in specs:
        try:
            tokenizer = _load_tokenizer(spec)
        except (ImportError, LogitCacheError, OSError, ValueError, TypeError) as exc:
            errors.append(f"{spec!r}: {type(exc).__name__}: {exc}")
            continue
        got = vocab_sha256(tokenizer)
        if expected and got != expected:
            raise VocabularyMismatchError(
                f"tokenizer {spec!r} has vocab_sha256 {got[:12]}..., the cache's is "
                f"{expected[:12]}...: it would spell the cached ids as the wrong text. Pass "
                "--teacher-tokenizer with the tokenizer the cache was built with."
            )
        if not expected:
            log.warning("cache records no vocab_sha256; trusting --teacher-tokenizer %s", spec)
        return tokenizer
    raise ConfigError(
        "--cross-tokenizer needs the teacher's tokenizer to turn the cached ids into text, and "
        f"it cannot be loaded here ({'; '.join(errors) or 'the manifest names no teacher'}). "
        "Pass --teacher-tokenizer PATH: a directory with the teacher's tokenizer files, or "
        "the teacher itself (hub id, directory, .gguf, smollm2-135m)."
    )


def _load_tokenizer(spec: str) -> Any:
    from logitcache.teachers import TeacherConfig, load_tokenizer

    if os.path.isdir(spec) and os.path.exists(os.path.join(spec, "tokenizer.json")):
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(spec, trust_remote_code=False)
    return load_tokenizer(TeacherConfig(teacher=spec, backend="transformers"))


@dataclass
class CrossTokenizerSetup:
    """Everything the trainer swaps in for a cross-tokenizer student."""

    method: str
    model: torch.nn.Module
    tokenizer: Any
    collate: Any
    vocab_size: int  # the teacher's V (tempered tail bucket)

    @classmethod
    def create(cls, cfg, manifest: Manifest) -> CrossTokenizerSetup:
        from logitcache.crosstok import CrossTokenizerCollate, Retokenizer, check_roundtrip

        if manifest.top_k == 0:
            raise ConfigError(
                f"cache {cfg.cache} stores no top-k (built with --top-k 0): ULD and GOLD "
                "compare the teacher's top-k distribution. Rebuild with --top-k K (e.g. 64)."
            )
        torch.manual_seed(cfg.seed)
        model, tokenizer = load_student_with_tokenizer(cfg.student)
        teacher_tok = load_teacher_tokenizer(manifest, cfg.teacher_tokenizer)
        retok = Retokenizer(teacher_tok, tokenizer)
        cache = open_cache(cfg.cache, cfg.storage_options)
        probe = []
        for sample in cache.iter_samples():
            probe.append(sample["input_ids"])
            if len(probe) >= ROUNDTRIP_ROWS:
                break
        check_roundtrip(teacher_tok, retok.teacher_table, probe, name="the teacher tokenizer")
        max_len = getattr(model.config, "max_position_embeddings", None)
        collate = CrossTokenizerCollate(
            retok, vocab_map=cfg.cross_tokenizer == "gold", max_len=max_len
        )
        if cfg.cross_tokenizer == "gold":
            matched = int((retok.vocab_map >= 0).sum())
            log.info(
                "GOLD: %d of %d teacher ids map one-to-one to student ids",
                matched,
                len(retok.vocab_map),
            )
        return cls(cfg.cross_tokenizer, model, tokenizer, collate, manifest.vocab_size)

    def loss(self, logits: torch.Tensor, batch: Mapping[str, torch.Tensor], loss_cfg):
        alpha = 1.0 if loss_cfg.kind == "ce" else loss_cfg.alpha
        return cross_tokenizer_loss(
            logits,
            batch,
            method=self.method,
            temperature=loss_cfg.temperature,
            alpha=alpha,
            chunk_size=loss_cfg.chunk_size,
            vocab_size=self.vocab_size,
        )


@torch.no_grad()
def evaluate_cross(
    model: torch.nn.Module,
    batches: Iterable[Mapping[str, torch.Tensor]],
    *,
    device: torch.device,
    vocab_size: int,
    method: str = "uld",
    max_batches: int | None = None,
    autocast: bool = False,
) -> dict[str, float]:
    """Token- and byte-weighted held-out metrics, summed across ranks (see module doc)."""
    was_training = model.training
    model.eval()
    # tokens, ce, kd positions, uld, gold, ce over byte-bearing tokens, bytes
    sums = [0.0] * 7
    for i, batch in enumerate(batches):
        if max_batches is not None and i >= max_batches:
            break
        batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
            logits = model(
                input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]
            ).logits
        ce_mask = batch["labels"] != -100
        if ce_mask.any():
            z = logits[ce_mask].float()
            ce = torch.nn.functional.cross_entropy(z, batch["labels"][ce_mask], reduction="none")
            nbytes = batch["label_bytes"][ce_mask]
            sums[0] += z.shape[0]
            sums[1] += ce.sum().item()
            sums[5] += ce[nbytes > 0].sum().item()
            sums[6] += nbytes.sum().item()
        kd_mask = batch["kd_mask"]
        if kd_mask.any():
            z = logits[kd_mask].float()
            lp, tl = batch["topk_logprobs"][kd_mask], batch["tail_logmass"][kd_mask]
            sums[2] += z.shape[0]
            sums[3] += uld(z, lp, tl, vocab_size=vocab_size).sum().item()
            if "topk_student_ids" in batch:
                sids = batch["topk_student_ids"][kd_mask]
                sums[4] += gold(z, sids, lp, tl, vocab_size=vocab_size).sum().item()
    n, ce, n_kd, uld_sum, gold_sum, ce_b, nbytes = all_reduce_sum(sums, device)
    model.train(was_training)
    if n == 0:
        return {"eval_tokens": 0}
    out = {
        "eval_tokens": int(n),
        "eval_ce": ce / n,
        "eval_bpb": ce_b / (math.log(2) * nbytes) if nbytes else float("nan"),
        "eval_kd_coverage": n_kd / n,
    }
    if n_kd:
        out["eval_uld"] = uld_sum / n_kd
        if method == "gold":
            out["eval_gold"] = gold_sum / n_kd
    return out
