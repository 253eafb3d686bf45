"""End-to-end builds with the tiny random Llama: formats, alignment, determinism, resume, Ray."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from config_sections import capture_config

from logitcache.capture import build_cache
from logitcache.errors import CorpusError, IncompatibleCacheError
from logitcache.format import open_cache

K = 8


def _build(teacher_dir, corpus, out, **kw):
    cfg = {
        "teacher": teacher_dir,
        "corpus": corpus if isinstance(corpus, list) else [corpus],
        "out": out,
        "top_k": K,
        "seq_len": 64,
        "use_ray": False,
        "progress": "off",
        "codec": "raw",
        "dtype": "float32",
        "device": "cpu",
    }
    cfg.update(kw)
    return build_cache(capture_config(**cfg))


def _samples(uri, **kw):
    return {s["sample_id"]: s for s in open_cache(uri, **kw).iter_samples()}


@pytest.fixture(scope="module")
def reference_model(teacher_dir):
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(teacher_dir, dtype=torch.float32).eval()

    def logprobs(ids: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            logits = model(torch.as_tensor(ids[None].astype(np.int64))).logits[0].float()
        return torch.log_softmax(logits, -1).numpy()

    return logprobs


def _check_against_reference(sample, logprobs):
    ref = logprobs(sample["input_ids"])
    idx = np.argsort(-ref, axis=1, kind="stable")[:, :K]
    assert np.array_equal(sample["topk_ids"], idx)
    np.testing.assert_allclose(sample["topk_logprobs"], np.take_along_axis(ref, idx, 1), atol=1e-4)
    tail = np.log1p(-np.exp(np.take_along_axis(ref, idx, 1)).sum(1))
    np.testing.assert_allclose(sample["tail_logmass"], tail, atol=1e-3)


def test_jsonl_build_matches_direct_forward(teacher_dir, pydoc_jsonl, tmp_path, reference_model):
    out = str(tmp_path / "cache")
    m = _build(teacher_dir, pydoc_jsonl, out, max_tokens=1000, unit_tokens=300)
    assert m.status == "complete" and m.num_tokens == 1000 and len(m.shards) >= 2
    assert m.capture["top_k"] == K and m.capture["alignment"] == "next-token"
    assert m.corpus["fingerprint"] and m.teacher["weights_sha256"]
    assert m.stats["run"]["tokens"] == 1000 and m.stats["bytes_per_token"] > 0
    samples = _samples(out)
    assert sum(len(s["input_ids"]) for s in samples.values()) == 1000
    for s in list(samples.values())[:3]:
        _check_against_reference(s, reference_model)
        assert not s["loss_mask"][-1] and s["loss_mask"][:-1].all()


def test_local_run_closes_its_teacher(teacher_dir, pydoc_jsonl, tmp_path, monkeypatch):
    """The executor calls the teacher's optional close() when the run ends (the vLLM teacher
    stops its engine there instead of leaving it to interpreter exit)."""
    from logitcache.teachers.testing import RECORD_DIR_ENV

    records = tmp_path / "records"
    monkeypatch.setenv(RECORD_DIR_ENV, str(records))
    recorder = "logitcache.teachers.testing:RecordingTeacher"
    m = _build(teacher_dir, pydoc_jsonl, str(tmp_path / "c"), max_tokens=200, backend=recorder)
    assert m.status == "complete"
    [record] = [json.loads(p.read_text()) for p in records.glob("*.json")]
    assert record["pid"] == os.getpid() and record.get("closed") is True


def test_text_parquet_and_chat_formats(teacher_dir, tmp_path, reference_model):
    from pydoc_data.topics import topics

    import pyarrow as pa
    import pyarrow.parquet as pq
    from transformers import AutoTokenizer

    keys = sorted(topics)[:3]
    for i, key in enumerate(keys):
        (tmp_path / f"doc{i}.txt").write_text(topics[key])
    pq.write_table(pa.table({"body": [topics[k] for k in keys]}), tmp_path / "c.parquet")
    chat = {
        "messages": [
            {"role": "user", "content": "What does the pass statement do?"},
            {"role": "assistant", "content": "Nothing: it is a placeholder."},
        ]
    }
    (tmp_path / "chat.jsonl").write_text(json.dumps(chat) + "\n")

    _build(teacher_dir, str(tmp_path / "doc*.txt"), str(tmp_path / "t"), packing="document")
    _build(
        teacher_dir, str(tmp_path / "c.parquet"), str(tmp_path / "p"), packing="document",
        text_field="body",
    )  # fmt: skip
    text, par = _samples(str(tmp_path / "t")), _samples(str(tmp_path / "p"))
    # The same documents give the same content-derived ids whatever the file format.
    assert set(text) == set(par)
    for sid in text:
        assert np.array_equal(text[sid]["input_ids"], par[sid]["input_ids"])
        np.testing.assert_allclose(text[sid]["topk_logprobs"], par[sid]["topk_logprobs"], atol=1e-5)

    _build(
        teacher_dir,
        str(tmp_path / "chat.jsonl"),
        str(tmp_path / "c"),
        packing="document",
        seq_len=256,
    )
    [s] = _samples(str(tmp_path / "c")).values()
    tok = AutoTokenizer.from_pretrained(teacher_dir)
    ref = tok.apply_chat_template(
        chat["messages"], tokenize=True, return_dict=True, return_assistant_tokens_mask=True
    )
    ids = list(ref["input_ids"]) + [tok.eos_token_id]
    assistant = [bool(x) for x in ref["assistant_masks"]] + [False]
    assert s["input_ids"].tolist() == ids
    # ALIGNMENT: position t is a target iff token t+1 is an assistant token.
    assert s["loss_mask"].tolist() == assistant[1:] + [False]
    _check_against_reference(s, reference_model)


def test_same_corpus_same_ids_and_payload_on_s3(teacher_dir, pydoc_jsonl, tmp_path, s3_bucket):
    import s3fs

    s3fs.S3FileSystem().put(pydoc_jsonl, f"{s3_bucket}/corpus/pydoc.jsonl")
    kw = {"max_tokens": 600, "unit_tokens": 250, "rs_samples": 5}
    _build(teacher_dir, pydoc_jsonl, str(tmp_path / "local"), **kw)
    m = _build(teacher_dir, f"s3://{s3_bucket}/corpus/*.jsonl", f"s3://{s3_bucket}/caches/a", **kw)
    a, b = _samples(str(tmp_path / "local")), _samples(f"s3://{s3_bucket}/caches/a")
    assert list(a) == list(b)
    for sid in a:
        for key in ("input_ids", "loss_mask", "topk_ids", "rs_ids", "rs_counts"):
            assert np.array_equal(a[sid][key], b[sid][key]), key
        assert (a[sid]["rs_counts"].sum(1) == 5).all()
    assert m.corpus["sources"] == [f"s3://{s3_bucket}/corpus/pydoc.jsonl"]


def test_draws_only_and_refused_rerun(teacher_dir, pydoc_jsonl, tmp_path):
    out = str(tmp_path / "rs")
    m = _build(teacher_dir, pydoc_jsonl, out, top_k=0, rs_samples=16, max_tokens=200)
    assert m.top_k == 0 and m.rs_samples == 16
    for s in _samples(out).values():
        assert s["topk_ids"].shape == (len(s["input_ids"]), 0)
        assert (s["rs_counts"].sum(1) == 16).all()
        assert ((s["rs_ids"] >= 0) & (s["rs_ids"] < m.vocab_size)).all()
    # Same command again: nothing to do, same manifest shards.
    again = _build(teacher_dir, pydoc_jsonl, out, top_k=0, rs_samples=16, max_tokens=200)
    assert [s.path for s in again.shards] == [s.path for s in m.shards]
    assert again.stats["run"]["units_skipped"] == len(m.shards)
    with pytest.raises(
        IncompatibleCacheError, match="capture.rs_samples: 16 in cache, 8 requested"
    ):
        _build(teacher_dir, pydoc_jsonl, out, top_k=0, rs_samples=8, max_tokens=200)
    with pytest.raises(IncompatibleCacheError, match="corpus.fingerprint"):
        _build(teacher_dir, pydoc_jsonl, out, top_k=0, rs_samples=16, max_tokens=300)


def test_empty_corpus_is_an_error(teacher_dir, tmp_path):
    (tmp_path / "empty.txt").write_text("   \n")
    with pytest.raises(CorpusError, match="no usable documents"):
        _build(teacher_dir, str(tmp_path / "empty.txt"), str(tmp_path / "out"))


def _manifest_units(path):
    try:
        with open(os.path.join(path, "manifest.json")) as fh:
            m = json.load(fh)
    except (FileNotFoundError, json.JSONDecodeError):
        return 0, None
    return len(m["shards"]), m["status"]


def test_resume_after_sigkill_equals_uninterrupted(teacher_dir, pydoc_jsonl, tmp_path):
    args = [
        "build", "--teacher", teacher_dir, "--corpus", pydoc_jsonl, "--top-k", str(K),
        "--rs-samples", "4", "--seq-len", "64", "--max-tokens", "15000", "--unit-tokens", "400",
        "--no-ray", "--progress", "off", "--codec", "raw", "--device", "cpu", "--dtype", "float32",
    ]  # fmt: skip
    killed = str(tmp_path / "killed")
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "logitcache", *args, "--out", killed],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.time() + 120
    try:
        while time.time() < deadline:
            n, status = _manifest_units(killed)
            if n >= 3 or proc.poll() is not None:
                break
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
    committed, status = _manifest_units(killed)
    assert committed >= 3 and status == "building", "the build finished before it was killed"
    from logitcache.cli import main

    assert main([*args, "--out", killed]) == 0
    m = _build(
        teacher_dir,
        pydoc_jsonl,
        str(tmp_path / "clean"),
        rs_samples=4,
        max_tokens=15000,
        unit_tokens=400,
    )
    resumed = open_cache(killed)
    assert resumed.manifest.stats["run"]["units_skipped"] >= committed
    assert sorted(s.unit for s in resumed.shards) == sorted(s.unit for s in m.shards)
    ids = [s["sample_id"] for s in resumed.iter_samples()]
    assert len(ids) == len(set(ids))
    a, b = {s["sample_id"]: s for s in resumed.iter_samples()}, _samples(str(tmp_path / "clean"))
    assert set(a) == set(b)
    for sid in b:
        for key in ("input_ids", "loss_mask", "topk_ids", "rs_ids", "rs_counts"):
            assert np.array_equal(a[sid][key], b[sid][key]), key
        np.testing.assert_allclose(a[sid]["topk_logprobs"], b[sid]["topk_logprobs"], atol=1e-5)
    shard_files = os.listdir(os.path.join(killed, "shards"))
    assert len(shard_files) == len(m.shards)  # orphans of the killed run were removed


@pytest.mark.slow
def test_two_ray_actors_match_local_run(teacher_dir, paragraphs_jsonl, tmp_path, ray_local):
    kw = {"max_tokens": 6000, "unit_tokens": 300, "rs_samples": 3}
    corpus = paragraphs_jsonl
    local = _build(teacher_dir, corpus, str(tmp_path / "local"), **kw)
    m = _build(teacher_dir, corpus, str(tmp_path / "ray"), use_ray=True, workers=2, **kw)
    assert len(m.shards) >= 15
    assert len(m.stats["workers"]) == 2, m.stats["workers"]
    steady = m.stats["run"]["steady"]  # both actors' units after their first, by score times
    assert steady["units"] == len(m.shards) - 2
    assert 0 < steady["tokens"] < m.num_tokens
    assert 0 < steady["scored_s"] <= 2 * steady["seconds"] + 1e-3
    assert sorted(s.unit for s in m.shards) == sorted(s.unit for s in local.shards)
    a, b = _samples(str(tmp_path / "ray")), _samples(str(tmp_path / "local"))
    assert set(a) == set(b)
    for sid in a:
        assert np.array_equal(a[sid]["topk_ids"], b[sid]["topk_ids"])
        assert np.array_equal(a[sid]["rs_counts"], b[sid]["rs_counts"])
        np.testing.assert_allclose(a[sid]["topk_logprobs"], b[sid]["topk_logprobs"], atol=1e-4)
