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
from logitcache.losses.cross_tokenizer import (
    cross_tokenizer_loss,
    cross_tokenizer_loss_from_hidden,
    gold,
    uld,
)
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


def build_cross_collate(
    manifest: Manifest,
    cache: str,
    student_tokenizer: Any,
    *,
    method: str,
    teacher_tokenizer: str | Any | None = None,
    storage_options: Any = None,
    max_len: int | None = None,
    sample_ids: bool = False,
):
    """The checked :class:`~logitcache.crosstok.CrossTokenizerCollate` for ``cache``.

    Refuses a cache without top-k, a teacher tokenizer that does not match the manifest or
    whose pieces do not spell the cached rows (checked on the first rows)."""
    from logitcache.crosstok import CrossTokenizerCollate, Retokenizer, check_roundtrip

    if manifest.top_k == 0:
        raise ConfigError(
            f"cache {cache} stores no top-k (built with --top-k 0): ULD and GOLD compare the "
            "teacher's top-k distribution. Rebuild with --top-k K (e.g. 64)."
        )
    if student_tokenizer is None or not hasattr(student_tokenizer, "get_vocab"):
        raise ConfigError(
            "cross-tokenizer distillation needs the student's own tokenizer (the trainer's "
            "processing_class, or a tokenizer saved in --student DIR)"
        )
    if teacher_tokenizer is None or isinstance(teacher_tokenizer, str):
        teacher_tok = load_teacher_tokenizer(manifest, teacher_tokenizer)
    else:
        teacher_tok = _checked(teacher_tokenizer, manifest)
    retok = Retokenizer(teacher_tok, student_tokenizer)
    probe = []
    for sample in open_cache(cache, storage_options).iter_samples():
        probe.append(sample["input_ids"])
        if len(probe) >= ROUNDTRIP_ROWS:
            break
    check_roundtrip(teacher_tok, retok.teacher_table, probe, name="the teacher tokenizer")
    if method == "gold":
        log.info(
            "GOLD: %d of %d teacher ids map one-to-one to student ids",
            int((retok.vocab_map >= 0).sum()),
            len(retok.vocab_map),
        )
    return CrossTokenizerCollate(
        retok, vocab_map=method == "gold", max_len=max_len, sample_ids=sample_ids
    )


def _checked(tokenizer: Any, manifest: Manifest) -> Any:
    from logitcache.train.student import vocab_sha256

    expected = manifest.tokenizer.get("vocab_sha256")
    if expected and vocab_sha256(tokenizer) != expected:
        raise VocabularyMismatchError(
            "the teacher_tokenizer given does not match the cache's vocab_sha256; pass the "
            "tokenizer the cache was built with"
        )
    return tokenizer


def check_method(method: str | None, loss_cfg) -> None:
    """``method`` is uld | gold, and the loss config is one a cross-tokenizer run can use."""
    from logitcache.losses.cross_tokenizer import METHODS

    if method not in METHODS:
        raise ConfigError(
            f"cross_tokenizer must be one of {', '.join(METHODS)} (or unset), got "
            f"{method!r}; see docs/cross-tokenizer.md"
        )
    if loss_cfg.kind not in ("kl_tail", "ce"):
        raise ConfigError(
            f"--loss {loss_cfg.kind} compares the teacher's ids with the student's and needs "
            "a shared tokenizer; with --cross-tokenizer the KD term is ULD or GOLD (leave "
            "--loss at its default, or --loss ce for the student's CE alone)"
        )
    if method == "uld" and loss_cfg.alpha == 0 and loss_cfg.kind != "ce":
        log.warning(
            "ULD with alpha=0: sorted probabilities do not say which token is likely; the "
            "student needs its own CE too (alpha > 0, e.g. 0.5)"
        )


@dataclass
class CrossTokenizerSetup:
    """Everything a trainer swaps in for a cross-tokenizer student."""

    method: str
    collate: Any
    vocab_size: int  # the teacher's V (tempered tail bucket)
    model: torch.nn.Module | None = None
    tokenizer: Any = None

    @classmethod
    def create(cls, cfg, manifest: Manifest) -> CrossTokenizerSetup:
        """For ``logitcache train``: the student and its tokenizer from ``cfg.student``."""
        torch.manual_seed(cfg.seed)
        model, tokenizer = load_student_with_tokenizer(cfg.student)
        collate = build_cross_collate(
            manifest,
            cfg.cache,
            tokenizer,
            method=cfg.cross_tokenizer,
            teacher_tokenizer=cfg.teacher_tokenizer,
            storage_options=cfg.storage_options,
            max_len=getattr(model.config, "max_position_embeddings", None),
        )
        return cls(cfg.cross_tokenizer, collate, manifest.vocab_size, model, tokenizer)

    def _kw(self, loss_cfg) -> dict[str, Any]:
        return dict(
            method=self.method,
            temperature=loss_cfg.temperature,
            alpha=1.0 if loss_cfg.kind == "ce" else loss_cfg.alpha,
            chunk_size=loss_cfg.chunk_size,
            vocab_size=self.vocab_size,
        )

    def loss(self, logits: torch.Tensor, batch: Mapping[str, torch.Tensor], loss_cfg):
        """From the student's dense ``[B, S, V]`` logits (``--loss-impl dense``)."""
        return cross_tokenizer_loss(logits, batch, **self._kw(loss_cfg))

    def loss_from_hidden(self, hidden, weight, bias, batch, loss_cfg, *, softcap=None):
        """From the last hidden states and the output layer, chunk by chunk (fused)."""
        return cross_tokenizer_loss_from_hidden(
            hidden, weight, batch, bias=bias, softcap=softcap, **self._kw(loss_cfg)
        )


def _position_logits(model: torch.nn.Module, batch, masks, autocast: bool, device):
    """For each boolean mask, the student's float32 logits at those positions, in chunks of
    positions computed from the last hidden state and the output layer (no ``[B, S, V]``)
    when the model is a body plus a linear head; from its dense logits otherwise."""
    from logitcache.losses.fused import default_chunk_size

    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    body = getattr(model, "base_model", model)
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
        if head is None or body is model or getattr(head, "weight", None) is None:
            z = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
            return [[z[m].float()] for m in masks]
        h = body(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])[0]
    weight, bias = head.weight, getattr(head, "bias", None)
    softcap = getattr(getattr(model, "config", None), "final_logit_softcapping", None)
    step = default_chunk_size(weight.shape[0], device)
    out = []
    for m in masks:
        hm = h[m]
        parts = []
        for i in range(0, hm.shape[0], step):
            z = torch.nn.functional.linear(hm[i : i + step].float(), weight.float(), bias)
            parts.append(torch.tanh(z / softcap) * softcap if softcap else z)
        out.append(parts)
    return out


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
        batch = {k: v.to(device, non_blocking=True) for k, v in batch.items() if torch.is_tensor(v)}
        ce_mask, kd_mask = batch["labels"] != -100, batch["kd_mask"]
        ce_parts, kd_parts = _position_logits(model, batch, [ce_mask, kd_mask], autocast, device)
        labels, nbytes = batch["labels"][ce_mask], batch["label_bytes"][ce_mask]
        at = 0
        for z in ce_parts:
            n = z.shape[0]
            ce = torch.nn.functional.cross_entropy(z, labels[at : at + n], reduction="none")
            nb = nbytes[at : at + n]
            sums[0] += n
            sums[1] += ce.sum().item()
            sums[5] += ce[nb > 0].sum().item()
            sums[6] += nb.sum().item()
            at += n
        lp_all, tl_all = batch["topk_logprobs"][kd_mask], batch["tail_logmass"][kd_mask]
        sids_all = batch["topk_student_ids"][kd_mask] if "topk_student_ids" in batch else None
        at = 0
        for z in kd_parts:
            n = z.shape[0]
            lp, tl = lp_all[at : at + n], tl_all[at : at + n]
            sums[2] += n
            sums[3] += uld(z, lp, tl, vocab_size=vocab_size).sum().item()
            if sids_all is not None:
                sums[4] += (
                    gold(z, sids_all[at : at + n], lp, tl, vocab_size=vocab_size).sum().item()
                )
            at += n
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
