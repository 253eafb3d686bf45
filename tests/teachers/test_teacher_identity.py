"""Teacher and tokenizer identity: content hashes, stable and cached."""

from __future__ import annotations

import hashlib
import json
import os

from logitcache.teachers import (
    TeacherConfig,
    describe_teacher,
    load_teacher,
    load_tokenizer,
    tokenizer_identity,
)
from logitcache.teachers import identity as ident


def test_weights_sha256_is_file_digest_and_cached(tiny_llama_dir):
    weights = tiny_llama_dir / "model.safetensors"
    expected = hashlib.sha256(weights.read_bytes()).hexdigest()
    assert ident.weights_sha256(tiny_llama_dir) == expected
    st = os.stat(weights)
    assert ident._digest_cache[(os.path.realpath(weights), st.st_size, st.st_mtime_ns)] == expected
    assert ident.weights_sha256(tiny_llama_dir) == expected


def test_changed_file_is_rehashed(tmp_path):
    f = tmp_path / "model.safetensors"
    f.write_bytes(b"a" * 100)
    first = ident.weights_sha256(tmp_path)
    f.write_bytes(b"b" * 101)
    assert ident.weights_sha256(tmp_path) == hashlib.sha256(b"b" * 101).hexdigest() != first


def test_sharded_weights_digest_depends_on_every_shard(tmp_path):
    (tmp_path / "model-00001.safetensors").write_bytes(b"one")
    (tmp_path / "model-00002.safetensors").write_bytes(b"two")
    both = ident.weights_sha256(tmp_path)
    (tmp_path / "model-00002.safetensors").write_bytes(b"TWO")
    assert ident.weights_sha256(tmp_path) != both


def test_tokenizer_identity(tiny_llama_dir):
    tok = load_tokenizer(TeacherConfig(teacher=str(tiny_llama_dir)))
    info = tokenizer_identity(tok, 640)
    vocab = tok.get_vocab()
    by_id = sorted(vocab, key=vocab.get)
    assert info["vocab_sha256"] == hashlib.sha256(json.dumps(by_id).encode()).hexdigest()
    assert info["vocab_size"] == 640 and info["tokenizer_size"] == len(tok) == 512
    assert (info["bos_token_id"], info["eos_token_id"], info["pad_token_id"]) == (0, 1, 2)
    template = tok.chat_template
    assert info["chat_template_sha256"] == hashlib.sha256(template.encode()).hexdigest()
    # a different vocabulary gives a different digest
    tok.add_tokens(["<|extra|>"])
    assert tokenizer_identity(tok, 640)["vocab_sha256"] != info["vocab_sha256"]


def test_describe_matches_loaded_teacher(tiny_llama_dir):
    cfg = TeacherConfig(teacher=str(tiny_llama_dir), device="cpu")
    described = describe_teacher(cfg)
    teacher = load_teacher(cfg)
    assert described == {"identity": teacher.identity, "vocab_size": teacher.vocab_size}
    assert teacher.identity["weights_sha256"] == ident.weights_sha256(tiny_llama_dir)
    assert teacher.identity["dtype"] == "float32"
    assert teacher.identity["backend"] == "transformers"
    assert teacher.identity["name"] == str(tiny_llama_dir)
