"""Cross-tokenizer training end to end: a cache from the tiny Llama teacher (its 512-id BPE),
a student with a BPE of its own trained here, ULD and GOLD; and the errors that name a fix."""

from __future__ import annotations

import json

import numpy as np
import pytest

from logitcache.cli import main as cli_main
from logitcache.errors import ConfigError, VocabularyMismatchError
from logitcache.losses import LossConfig
from logitcache.train import TrainConfig, train
from logitcache.train.metrics import read_metrics


def make_student_dir(path, *, kind="bytelevel", vocab_size=400, with_tokenizer=True) -> str:
    """A tiny random Llama on a tokenizer of its own, written with save_pretrained."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from logitcache.crosstok.testing import make_student_tokenizer

    tok = make_student_tokenizer(path, kind=kind, vocab_size=vocab_size)
    config = LlamaConfig(
        vocab_size=len(tok), hidden_size=32, intermediate_size=96, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
        tie_word_embeddings=True, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )  # fmt: skip
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(str(path))
    if not with_tokenizer:
        for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
            (path / name).unlink(missing_ok=True)
    return str(path)


@pytest.fixture(scope="module")
def student_dir(tmp_path_factory):
    return make_student_dir(tmp_path_factory.mktemp("xtok_student") / "s")


def config(cache, out, student, **kw) -> TrainConfig:
    base = dict(
        cache=cache, out=str(out), student=student, batch_size=8, lr=1e-2, warmup=2,
        heldout_fraction=0.2, num_workers=0, eval_every=100, log_every=5,
        cross_tokenizer="uld", loss=LossConfig(alpha=0.2),
    )  # fmt: skip
    return TrainConfig(**{**base, **kw})


@pytest.mark.parametrize("method", ["uld", "gold"])
def test_short_run_lowers_heldout_uld_and_saves_the_students_tokenizer(
    kd_cache, student_dir, tmp_path, method
):
    out = tmp_path / method
    result = train(
        config(kd_cache, out, student_dir, steps=30, eval_every=30, cross_tokenizer=method)
    )
    evals = [r for r in read_metrics(str(out / "metrics.jsonl")) if r["split"] == "eval"]
    first, last = evals[0], evals[-1]
    assert [r["step"] for r in evals] == [0, 30]
    # a random student's sorted distribution is near uniform over 400 ids, the teacher's is
    # peaked: matching the shape is the first thing ULD teaches (measured: ~-45% in 30 steps)
    assert last["eval_uld"] < 0.8 * first["eval_uld"], (first, last)
    assert last["eval_ce"] < first["eval_ce"] and last["eval_bpb"] < first["eval_bpb"]
    assert 0.3 < last["eval_kd_coverage"] <= 1.0
    if method == "gold":
        assert last["eval_gold"] < first["eval_gold"]
    assert result["eval_uld"] == pytest.approx(last["eval_uld"])

    from transformers import AutoTokenizer

    saved = AutoTokenizer.from_pretrained(str(out / "student"))
    assert saved.get_vocab() == AutoTokenizer.from_pretrained(student_dir).get_vocab()


def test_cli_cross_tokenizer_with_ce_only(kd_cache, student_dir, tmp_path, capsys):
    out = tmp_path / "cli"
    rc = cli_main([
        "train", "--cache", kd_cache, "--student", student_dir, "--out", str(out),
        "--cross-tokenizer", "uld", "--loss", "ce", "--steps", "3", "--batch-size", "4",
        "--num-workers", "0", "--eval-batches", "2",
    ])  # fmt: skip
    assert rc == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["step"] == 3 and result["eval_bpb"] > 0
    train_rec = [r for r in read_metrics(str(out / "metrics.jsonl")) if r["split"] == "train"]
    assert all(r["kd"] == pytest.approx(r["kd"]) for r in train_rec)  # finite


def test_errors_name_the_fix(kd_cache, student_dir, tmp_path):
    with pytest.raises(ConfigError, match="--student DIR"):
        train(config(kd_cache, tmp_path / "a", "tiny"))
    bare = make_student_dir(tmp_path / "bare", with_tokenizer=False)
    with pytest.raises(ConfigError, match=r"tokenizer\.save_pretrained"):
        train(config(kd_cache, tmp_path / "b", bare))
    with pytest.raises(ConfigError, match="--teacher-tokenizer PATH"):
        train(
            config(kd_cache, tmp_path / "c", student_dir, teacher_tokenizer=str(tmp_path / "nope"))
        )
    with pytest.raises(VocabularyMismatchError, match="--teacher-tokenizer"):
        train(config(kd_cache, tmp_path / "d", student_dir, teacher_tokenizer=student_dir))
    with pytest.raises(ConfigError, match="needs a shared tokenizer"):
        config(kd_cache, tmp_path / "e", student_dir, loss=LossConfig(kind="rs_kd"))
    with pytest.raises(ConfigError, match="uld, gold"):
        config(kd_cache, tmp_path / "f", student_dir, cross_tokenizer="wasserstein")


def test_a_cache_without_topk_is_refused(tmp_path, tiny_llama_dir, student_dir):
    from transformers import AutoTokenizer

    from logitcache.codecs import CodecContext, get_codec
    from logitcache.format import CacheWriter, Manifest, write_shard
    from logitcache.format.shard import encode_table
    from logitcache.train.student import vocab_sha256

    tok = AutoTokenizer.from_pretrained(str(tiny_llama_dir))
    ids = np.asarray(tok("def f(x):\n    return x " * 8)["input_ids"][:32], np.int32)
    sample = {
        "sample_id": "rs-0", "input_ids": ids, "loss_mask": np.r_[np.ones(31, bool), False],
        "rs_ids": np.zeros((32, 1), np.int32), "rs_counts": np.full((32, 1), 4, np.int32),
    }  # fmt: skip
    codec = get_codec("raw")
    ctx = CodecContext(vocab_size=len(tok), top_k=0, rs_samples=4)
    uri = str(tmp_path / "rs-cache")
    writer = CacheWriter.open(uri, Manifest(
        teacher={"name": "tiny-llama", "source": str(tiny_llama_dir)},
        tokenizer={"name": "tiny", "vocab_size": len(tok), "vocab_sha256": vocab_sha256(tok)},
        capture={"top_k": 0, "rs_samples": 4, "seq_len": 32, "packing": "pack"},
        codec=codec.describe(), corpus={"fingerprint": "x"},
    ))  # fmt: skip
    writer.commit([write_shard(writer.store, "u0", encode_table([sample] * 1, codec, ctx))])
    writer.finish({"rows": 1})
    with pytest.raises(ConfigError, match="--top-k K"):
        train(config(uri, tmp_path / "run", student_dir, steps=1))


def test_fused_and_dense_objectives_agree_for_a_cross_tokenizer_student(kd_cache, student_dir):
    """The trainer's default (fused: logits chunk by chunk from hidden states) computes the same
    loss and gradients as the dense path on real cross-tokenizer batches."""
    import torch

    from logitcache.data import CacheDataset, make_dataloader
    from logitcache.format import open_cache
    from logitcache.train.cross_tokenizer import CrossTokenizerSetup
    from logitcache.train.objective import StudentObjective

    manifest = open_cache(kd_cache).manifest
    cfg = config(kd_cache, "unused", student_dir, cross_tokenizer="gold")
    setup = CrossTokenizerSetup.create(cfg, manifest)
    loader = make_dataloader(
        CacheDataset(kd_cache, shuffle=False), batch_size=4, collate_fn=setup.collate
    )
    batch = next(iter(loader))
    grads = []
    for impl in ("fused", "dense"):
        loss_cfg = LossConfig(alpha=0.3, temperature=2.0, impl=impl, chunk_size=37)
        objective = StudentObjective(
            setup.model, loss_cfg, vocab_size=manifest.vocab_size, cross=setup
        )
        setup.model.zero_grad()
        loss, m = objective(batch)
        loss.backward()
        grads.append((loss.detach(), [p.grad.clone() for p in setup.model.parameters()]))
        assert int(m["kd_tokens"]) > 0
    torch.testing.assert_close(grads[0][0], grads[1][0])
    for a, b in zip(grads[0][1], grads[1][1]):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
