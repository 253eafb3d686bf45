"""Corpus fixtures: a small real BPE tokenizer with a chat template (trained on pydoc topics)."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def tiny_tokenizer(tmp_path_factory):
    from transformers import AutoTokenizer

    from logitcache.teachers.testing import make_tiny_tokenizer

    path = tmp_path_factory.mktemp("tiny_tokenizer")
    make_tiny_tokenizer(path)
    return AutoTokenizer.from_pretrained(str(path))


@pytest.fixture(scope="session")
def pydoc_texts():
    from pydoc_data.topics import topics

    return [topics[k] for k in sorted(topics)]
