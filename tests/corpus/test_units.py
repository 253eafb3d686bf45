"""Tokenising, chat loss masks, packing and unit planning."""

from __future__ import annotations

import numpy as np
import pytest

from logitcache.corpus import Document, PackingConfig, TokenizedDoc, UnitPlanner, tokenize_documents
from logitcache.corpus.units import windows
from logitcache.errors import ConfigError


def _plan(tok, texts, **cfg):
    docs = [Document(text=t, messages=None, where=f"t:{i}") for i, t in enumerate(texts)]
    planner = UnitPlanner(PackingConfig(eos_id=tok.eos_token_id, **cfg))
    units = []
    for d, t in zip(docs, tokenize_documents(tok, docs)):
        units += planner.add(d.content_hash, t)
        if planner.exhausted:
            break
    return units + planner.finish(), planner


def test_chat_mask_covers_assistant_tokens_only(tiny_tokenizer):
    msgs = (
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "What is a list?"},
        {"role": "assistant", "content": "A mutable sequence."},
        {"role": "user", "content": "And a tuple?"},
        {"role": "assistant", "content": "An immutable one."},
    )
    [tok] = tokenize_documents(tiny_tokenizer, [Document(text=None, messages=msgs, where="c:1")])
    # Reference: the template's own {% generation %} markers.
    ref = tiny_tokenizer.apply_chat_template(
        list(msgs), tokenize=True, return_dict=True, return_assistant_tokens_mask=True
    )
    assert tok.ids.tolist() == list(ref["input_ids"])
    assert tok.targets.tolist() == [bool(x) for x in ref["assistant_masks"]]
    decoded = tiny_tokenizer.decode(tok.ids[tok.targets])
    assert decoded == "A mutable sequence.<|im_end|>An immutable one.<|im_end|>"


def test_pack_mode_windows_eos_and_alignment(tiny_tokenizer, pydoc_texts):
    texts = pydoc_texts[:6]
    units, planner = _plan(tiny_tokenizer, texts, seq_len=64, unit_tokens=10**9)
    [unit] = units
    toks = [tiny_tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]
    stream = [i for t in toks for i in t + [tiny_tokenizer.eos_token_id]]
    assert np.concatenate([r.input_ids for r in unit.rows]).tolist() == stream
    assert all(len(r.input_ids) == 64 for r in unit.rows[:-1])
    for r in unit.rows:
        assert not r.loss_mask[-1] and r.loss_mask[:-1].all()
    assert len({r.sample_id for r in unit.rows}) == len(unit.rows)
    assert planner.stats.tokens == len(stream)


def test_document_mode_splits_long_docs(tiny_tokenizer):
    texts = ["short doc here", "a much longer document " * 20]
    units, _ = _plan(tiny_tokenizer, texts, seq_len=32, packing="document", unit_tokens=10**9)
    rows = units[0].rows
    n_long = len(tiny_tokenizer(texts[1], add_special_tokens=False)["input_ids"]) + 1
    assert len(rows) == 1 + -(-n_long // 32)
    assert rows[0].input_ids[-1] == tiny_tokenizer.eos_token_id
    assert rows[0].sample_id.endswith("-0000") and rows[2].sample_id.endswith("-0001")
    assert rows[1].sample_id.split("-")[0] == rows[2].sample_id.split("-")[0]


def test_units_are_deterministic_and_content_named(tiny_tokenizer, pydoc_texts):
    a, pa_ = _plan(tiny_tokenizer, pydoc_texts[:40], seq_len=128, unit_tokens=2000)
    b, pb = _plan(tiny_tokenizer, pydoc_texts[:40], seq_len=128, unit_tokens=2000)
    assert len(a) > 2
    assert [u.name for u in a] == [u.name for u in b]
    assert [r.sample_id for u in a for r in u.rows] == [r.sample_id for u in b for r in u.rows]
    assert pa_.fingerprint == pb.fingerprint
    c, pc = _plan(tiny_tokenizer, pydoc_texts[1:41], seq_len=128, unit_tokens=2000)
    assert pc.fingerprint != pa_.fingerprint and c[0].name != a[0].name
    # Whole documents per unit: each unit (but the last) reaches the budget.
    assert all(u.tokens >= 2000 for u in a[:-1])


def test_max_tokens_caps_exactly(tiny_tokenizer, pydoc_texts):
    units, planner = _plan(
        tiny_tokenizer, pydoc_texts, seq_len=100, unit_tokens=700, max_tokens=1500
    )
    assert sum(u.tokens for u in units) == 1500
    assert planner.stats.truncated and planner.exhausted
    again, _ = _plan(tiny_tokenizer, pydoc_texts, seq_len=100, unit_tokens=700, max_tokens=1500)
    assert [u.name for u in units] == [u.name for u in again]


def test_duplicate_documents_get_distinct_ids(tiny_tokenizer):
    units, planner = _plan(
        tiny_tokenizer, ["same words"] * 3, seq_len=16, packing="document", unit_tokens=10**9
    )
    ids = [r.sample_id for r in units[0].rows]
    assert len(set(ids)) == 3 and planner.stats.duplicate_documents == 2


def test_windows_drop_targetless_rows():
    ids = np.arange(5, dtype=np.int32)
    targets = np.array([True, False, False, False, True])
    got = [(w.tolist(), m.tolist()) for w, m in windows(ids, targets, 2)]
    assert got == [([0, 1], [False, False]), ([2, 3], [False, False]), ([4], [False])]
    planner = UnitPlanner(PackingConfig(seq_len=2, packing="document", eos_id=None))
    assert planner.add("h" * 64, TokenizedDoc(ids, targets)) == []
    assert planner.finish() == [] and planner.stats.dropped_windows == 3


def test_packing_config_validation():
    with pytest.raises(ConfigError, match="--packing document"):
        PackingConfig(seq_len=8, eos_id=None)
    with pytest.raises(ConfigError, match="seq-len"):
        PackingConfig(seq_len=1, eos_id=0)
