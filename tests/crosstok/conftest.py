"""Tokenizers for the alignment tests: the tiny teacher's byte-level BPE (tests/conftest.py)
and two student tokenizers trained here: a byte-level BPE and a SentencePiece-style one."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def teacher_tok(tiny_llama_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(tiny_llama_dir))


@pytest.fixture(scope="session")
def student_dirs(tmp_path_factory):
    from logitcache.crosstok.testing import make_student_tokenizer

    root = tmp_path_factory.mktemp("student_tokenizers")
    out = {}
    for kind in ("bytelevel", "metaspace"):
        make_student_tokenizer(root / kind, kind=kind, vocab_size=700)
        out[kind] = str(root / kind)
    return out


@pytest.fixture(scope="session")
def student_toks(student_dirs):
    from transformers import AutoTokenizer

    return {kind: AutoTokenizer.from_pretrained(path) for kind, path in student_dirs.items()}
