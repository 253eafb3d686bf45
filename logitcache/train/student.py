"""The student: a preset Llama-architecture config sized to the cache's vocabulary, or a model
loaded from a path / hub id, and the check that its vocabulary matches the cache's.

A cache's targets are token ids of the teacher's tokenizer, so a student must read and predict
the same ids. Presets take the vocabulary from the manifest (logits width = the teacher's
``vocab_size``, special ids from the tokenizer section). Loaded students are checked: their
logits must be at least as wide as the teacher's distribution, and a tokenizer shipped with
them must hash to the manifest's ``vocab_sha256``. Embeddings padded beyond the tokenizer's
vocabulary (common, for GPU-friendly sizes) are accepted: the extra ids simply fall in the
student's tail bucket.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from typing import Any

import torch

from logitcache.errors import ConfigError, VocabularyMismatchError
from logitcache.format import Manifest

log = logging.getLogger(__name__)

# name -> LlamaConfig fields besides the vocabulary (embeddings are tied). With SmolLM2's
# 49,152 ids: tiny ~1.6M parameters (tests, demos), draft ~7.1M (a speculative-decoding
# drafter that a CPU can train on ~250k tokens in minutes: its cost is the V x 128 output
# layer, so width is kept low and depth buys context), small ~17.3M.
PRESETS: dict[str, dict[str, Any]] = {
    "tiny": dict(
        hidden_size=32,
        intermediate_size=96,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
    ),
    "draft": dict(
        hidden_size=128,
        intermediate_size=384,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
    ),
    "small": dict(
        hidden_size=256,
        intermediate_size=768,
        num_hidden_layers=6,
        num_attention_heads=8,
        num_key_value_heads=4,
    ),
}


def _special_id(tok: dict[str, Any], name: str) -> int | None:
    for key in (f"{name}_token_id", f"{name}_id", name):
        value = tok.get(key)
        if isinstance(value, int):
            return value
    special = tok.get("special_tokens") or tok.get("special_token_ids") or {}
    value = special.get(name) if isinstance(special, dict) else None
    return value if isinstance(value, int) else None


def preset_student(name: str, manifest: Manifest, *, seed: int = 0) -> torch.nn.Module:
    """A freshly initialised Llama student whose vocabulary is the cache's."""
    from transformers import LlamaConfig, LlamaForCausalLM

    if name not in PRESETS:
        raise ConfigError(
            f"unknown student preset {name!r}; choose one of {list(PRESETS)} or a path"
        )
    tok = manifest.tokenizer
    seq_len = int(manifest.capture.get("seq_len") or 2048)
    config = LlamaConfig(
        vocab_size=manifest.vocab_size,
        max_position_embeddings=max(seq_len, 256),
        tie_word_embeddings=True,
        bos_token_id=_special_id(tok, "bos"),
        eos_token_id=_special_id(tok, "eos"),
        pad_token_id=_special_id(tok, "pad"),
        **PRESETS[name],
    )
    torch.manual_seed(seed)  # the same seed gives the same initial student
    model = LlamaForCausalLM(config)
    log.info(
        "student preset %r: %.2fM parameters, vocab %d",
        name,
        sum(p.numel() for p in model.parameters()) / 1e6,
        manifest.vocab_size,
    )
    return model


def load_student(path: str) -> tuple[torch.nn.Module, Any | None]:
    """A student from a local directory or hub id, and its tokenizer if it ships one."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    local = path.startswith(("/", "./", "../", "~")) or os.path.sep + os.path.sep in path
    if local and not os.path.isdir(os.path.expanduser(path)):
        raise ConfigError(
            f"--student {path!r}: no such directory. Give a directory written by "
            "save_pretrained, a hub id (org/name), or a preset (tiny, small)."
        )
    try:
        model = AutoModelForCausalLM.from_pretrained(path, trust_remote_code=False)
    except (OSError, ValueError) as exc:
        raise ConfigError(
            f"cannot load student {path!r}: {exc}. Use --student tiny|draft|small, a directory "
            "written by save_pretrained, or a hub id."
        ) from None
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=False)
    except (OSError, ValueError, TypeError):
        tokenizer = None
    return model, tokenizer


def vocab_sha256(tokenizer: Any) -> str:
    """The manifest's ``vocab_sha256`` for ``tokenizer``. The teachers package defines it; the
    fallback is the same definition (token strings ordered by id, gaps as "", as JSON)."""
    try:
        from logitcache.teachers.identity import vocab_sha256 as teachers_vocab_sha256
    except ImportError:
        vocab = tokenizer.get_vocab()
        tokens = [""] * (max(vocab.values()) + 1 if vocab else 0)
        for token, idx in vocab.items():
            tokens[idx] = token
        return hashlib.sha256(json.dumps(tokens).encode("utf-8")).hexdigest()
    return teachers_vocab_sha256(tokenizer)


def logits_width(model: torch.nn.Module) -> int:
    out = model.get_output_embeddings()
    if out is not None and hasattr(out, "weight"):
        return int(out.weight.shape[0])
    return int(model.config.vocab_size)


def check_vocabulary(
    model: torch.nn.Module, tokenizer: Any | None, manifest: Manifest, *, name: str
) -> None:
    """Refuse a student that cannot read or predict the cache's token ids."""
    teacher_v = manifest.vocab_size
    tok_size = int(manifest.tokenizer.get("tokenizer_size") or teacher_v)
    width = logits_width(model)
    rows = int(model.get_input_embeddings().weight.shape[0])
    if width < teacher_v or rows < tok_size:
        raise VocabularyMismatchError(
            f"student {name!r} has {rows} embedding rows and {width} output logits, but the "
            f"cache's teacher {manifest.teacher.get('name')!r} uses tokenizer_size={tok_size} "
            f"and a distribution over vocab_size={teacher_v} ids. Distil into a student that "
            "shares the teacher's tokenizer: --student tiny|draft|small builds one, or call "
            f"model.resize_token_embeddings({teacher_v}) on a student with the same tokenizer."
        )
    expected = manifest.tokenizer.get("vocab_sha256")
    if tokenizer is None or not expected:
        log.info("student %r ships no tokenizer to compare; checked sizes only", name)
        return
    got = vocab_sha256(tokenizer)
    if got != expected:
        raise VocabularyMismatchError(
            f"student {name!r} ships a tokenizer whose vocabulary sha256 {got[:12]}... differs "
            f"from the cache's {expected[:12]}... (teacher {manifest.teacher.get('name')!r}). "
            "Its token ids mean different strings, so the cached targets would be wrong for "
            "it. Use a student built on the teacher's tokenizer (--student tiny|draft|small)."
        )


def build_student(
    spec: str, manifest: Manifest, *, seed: int = 0
) -> tuple[torch.nn.Module, Any | None]:
    """``tiny`` / ``small`` presets or a path/hub id, checked against the cache's vocabulary.

    Returns the model and the student's own tokenizer (None for presets).
    """
    if spec in PRESETS:
        model, tokenizer = preset_student(spec, manifest, seed=seed), None
    elif os.path.isdir(spec) or "/" in spec:
        model, tokenizer = load_student(spec)
    else:
        raise ConfigError(
            f"--student {spec!r} is neither a preset ({', '.join(PRESETS)}) nor a path / hub id"
        )
    check_vocabulary(model, tokenizer, manifest, name=spec)
    return model, tokenizer
