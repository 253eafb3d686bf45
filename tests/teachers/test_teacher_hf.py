"""The transformers teacher on the tiny random Llama, checked against a dense forward."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from logitcache.errors import ConfigError
from logitcache.teachers import TeacherConfig, load_teacher
from logitcache.teachers.testing import make_tiny_llama

K = 8


@pytest.fixture(scope="module")
def teacher(tiny_llama_dir):
    return load_teacher(TeacherConfig(teacher=str(tiny_llama_dir), device="cpu"))


@pytest.fixture(scope="module")
def rows(teacher):
    from pydoc_data.topics import topics

    texts = [topics["for"][:400], topics["if"][:150], topics["while"][:60]]
    return [np.asarray(teacher.tokenizer(t)["input_ids"], np.int32) for t in texts]


def dense(teacher, row):
    with torch.inference_mode():
        logits = teacher.model(torch.from_numpy(row[None].astype(np.int64))).logits[0]
    return torch.log_softmax(logits.double(), -1).numpy()


def test_topk_matches_dense_forward(teacher, rows):
    out = teacher.score(rows, top_k=K, rs_samples=0, seeds=[0, 1, 2])
    for row, got in zip(rows, out):
        ref = dense(teacher, row)
        t = len(row)
        assert got["topk_ids"].shape == (t, K) and got["topk_ids"].dtype == np.int32
        assert got["topk_logprobs"].dtype == np.float32 and got["tail_logmass"].shape == (t,)
        ref_ids = np.argsort(-ref, axis=1, kind="stable")[:, :K]
        np.testing.assert_array_equal(got["topk_ids"], ref_ids)
        np.testing.assert_allclose(
            got["topk_logprobs"], np.take_along_axis(ref, ref_ids, 1), atol=2e-5
        )
        assert np.all(np.diff(got["topk_logprobs"], axis=1) <= 0)  # sorted, most likely first
        ref_tail = np.log1p(-np.exp(np.take_along_axis(ref, ref_ids, 1)).sum(1))
        np.testing.assert_allclose(got["tail_logmass"], ref_tail, atol=2e-5)
        assert "rs_ids" not in got


def test_batching_invariance(teacher, rows):
    seeds = [11, 12, 13]
    batched = teacher.score(rows, top_k=K, rs_samples=16, seeds=seeds)
    for i, row in enumerate(rows):
        alone = teacher.score([row], top_k=K, rs_samples=16, seeds=[seeds[i]])[0]
        np.testing.assert_array_equal(alone["topk_ids"], batched[i]["topk_ids"])
        np.testing.assert_allclose(alone["topk_logprobs"], batched[i]["topk_logprobs"], atol=1e-5)
        np.testing.assert_allclose(alone["tail_logmass"], batched[i]["tail_logmass"], atol=1e-5)
        np.testing.assert_array_equal(alone["rs_ids"], batched[i]["rs_ids"])
        np.testing.assert_array_equal(alone["rs_counts"], batched[i]["rs_counts"])


def test_forward_groups_and_full_logits_path_agree(tiny_llama_dir, teacher, rows):
    small = load_teacher(
        TeacherConfig(teacher=str(tiny_llama_dir), device="cpu", max_batch_tokens=64)
    )
    small._head_only = False  # post-process full logits instead of applying the head per chunk
    small.chunk_positions = 7
    a = teacher.score(rows, top_k=K, rs_samples=0, seeds=[0, 1, 2])
    b = small.score(rows, top_k=K, rs_samples=0, seeds=[0, 1, 2])
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x["topk_ids"], y["topk_ids"])
        np.testing.assert_allclose(x["topk_logprobs"], y["topk_logprobs"], atol=1e-5)
    dense_rows = small.forward_logprobs(rows)
    for row, lp in zip(rows, dense_rows):
        np.testing.assert_allclose(lp.numpy(), dense(teacher, row), atol=2e-5)
    assert small.bare_forward(rows) == sum(len(r) for r in rows)
    assert small.bare_forward(rows, chunked_head=True) == sum(len(r) for r in rows)


def test_sampled_draws(teacher, rows):
    row = rows[1]
    a = teacher.score([row], top_k=4, rs_samples=50, seeds=[7])[0]
    b = teacher.score([row], top_k=4, rs_samples=50, seeds=[7])[0]
    c = teacher.score([row], top_k=4, rs_samples=50, seeds=[8])[0]
    np.testing.assert_array_equal(a["rs_ids"], b["rs_ids"])
    np.testing.assert_array_equal(a["rs_counts"], b["rs_counts"])
    assert not np.array_equal(a["rs_ids"], c["rs_ids"])
    assert a["rs_ids"].dtype == a["rs_counts"].dtype == np.int32
    assert np.all(a["rs_counts"].sum(1) == 50)
    u = a["rs_ids"].shape[1]
    assert u == (a["rs_counts"] > 0).sum(1).max()
    for ids, counts in zip(a["rs_ids"], a["rs_counts"]):  # distinct, ascending, zero padding
        real = ids[counts > 0]
        assert np.all(np.diff(real) > 0) and np.all(ids[counts == 0] == 0)


def test_draws_follow_the_distribution(teacher, rows):
    row = rows[2][:3]
    n = 20_000
    got = teacher.score([row], top_k=1, rs_samples=n, seeds=[3])[0]
    p = np.exp(dense(teacher, row))
    for t in range(len(row)):
        freq = np.zeros(p.shape[1])
        freq[got["rs_ids"][t]] += got["rs_counts"][t]
        tv = 0.5 * np.abs(freq / n - p[t]).sum()
        assert tv < 0.08, f"position {t}: total variation {tv:.3f}"
        top = int(np.argmax(p[t]))
        assert abs(freq[top] / n - p[t, top]) < 4 * np.sqrt(p[t, top] / n) + 1e-3


def test_sampled_only(teacher, rows):
    got = teacher.score([rows[2]], top_k=0, rs_samples=5, seeds=[0])[0]
    t = len(rows[2])
    assert got["topk_ids"].shape == (t, 0) and got["topk_logprobs"].shape == (t, 0)
    np.testing.assert_array_equal(got["tail_logmass"], np.zeros(t, np.float32))
    assert np.all(got["rs_counts"].sum(1) == 5)


def test_score_argument_errors(teacher, rows):
    with pytest.raises(ConfigError, match="top_k=0"):
        teacher.score(rows[:1], top_k=0, rs_samples=0, seeds=[0])
    with pytest.raises(ConfigError, match="exceeds"):
        teacher.score(rows[:1], top_k=teacher.vocab_size + 1, rs_samples=0, seeds=[0])
    with pytest.raises(ConfigError, match=">= 0"):
        teacher.score(rows[:1], top_k=-1, rs_samples=0, seeds=[0])
    with pytest.raises(ConfigError, match="one seed per row"):
        teacher.score(rows[:2], top_k=2, rs_samples=0, seeds=[0])
    with pytest.raises(ConfigError, match="token ids"):
        teacher.score([np.array([1, 10_000], np.int32)], top_k=2, rs_samples=0, seeds=[0])
    with pytest.raises(ConfigError, match="non-empty"):
        teacher.score([np.array([], np.int32)], top_k=2, rs_samples=0, seeds=[0])


def test_full_vocab_topk_has_empty_tail(teacher, rows):
    got = teacher.score([rows[2][:4]], top_k=teacher.vocab_size, rs_samples=0, seeds=[0])[0]
    assert np.all(np.isneginf(got["tail_logmass"]))
    np.testing.assert_allclose(np.exp(got["topk_logprobs"].astype(np.float64)).sum(1), 1, 1e-5)


def test_logits_wider_than_tokenizer(tmp_path):
    path = make_tiny_llama(tmp_path / "wide", vocab_size=300, extra_logits=20, hidden_size=32)
    teacher = load_teacher(TeacherConfig(teacher=str(path), device="cpu"))
    assert (len(teacher.tokenizer), teacher.vocab_size) == (300, 320)
    got = teacher.score([np.arange(5, 20, dtype=np.int32)], top_k=320, rs_samples=0, seeds=[0])
    assert got[0]["topk_ids"].max() >= 300  # padding logits are part of the distribution
