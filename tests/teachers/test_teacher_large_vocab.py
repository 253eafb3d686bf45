"""Teachers with Qwen's (151,936) and Gemma 3's (262,144) logits widths, as tiny random models,
through build, verify, the loader, the losses and a train step.

Ids beyond 65,535 need a third byte plane in lc1; a 16-bit truncation anywhere would show up as
a large KL between the cache and the teacher's own logits, which is what this checks."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from config_sections import capture_config

from logitcache.capture import build_cache
from logitcache.data import CacheDataset
from logitcache.data.collate import collate
from logitcache.format import open_cache, verify_cache
from logitcache.losses import LossConfig
from logitcache.losses.compute import compute_loss
from logitcache.teachers import TeacherConfig, load_teacher
from logitcache.teachers.testing import make_tiny_llama
from logitcache.train import TrainConfig, train

K, RS = 16, 8


@pytest.fixture(scope="module", params=[151_936, 262_144], ids=["qwen-151936", "gemma3-262144"])
def big_cache(request, tmp_path_factory, pydoc_jsonl):
    vocab = request.param
    root = tmp_path_factory.mktemp(f"v{vocab}")
    teacher = make_tiny_llama(
        root / "teacher",
        vocab_size=512,
        extra_logits=vocab - 512,
        hidden_size=16,
        num_layers=1,
        head_scale=6.0,
    )
    uri = str(root / "cache")
    manifest = build_cache(
        capture_config(
            teacher=str(teacher),
            corpus=[pydoc_jsonl],
            out=uri,
            top_k=K,
            rs_samples=RS,
            seq_len=64,
            max_tokens=192,
            unit_tokens=128,
            use_ray=False,
            device="cpu",
            progress="off",
        )
    )
    return vocab, str(teacher), uri, manifest


def test_build_verify_and_ids_beyond_16_bits(big_cache):
    vocab, _, uri, manifest = big_cache
    assert manifest.vocab_size == vocab and manifest.num_tokens == 192
    assert verify_cache(open_cache(uri)).ok
    ids = np.concatenate([s["topk_ids"].ravel() for s in open_cache(uri).iter_samples()])
    assert ids.max() < vocab and ids.max() > 65_535  # random weights: ids all over the range


def test_loader_and_losses_against_the_teachers_own_logits(big_cache):
    """The teacher as its own student: the KD loss is the codec's error only (near 0)."""
    vocab, teacher_dir, uri, _ = big_cache
    samples = list(CacheDataset(uri, shuffle=False))
    batch = collate(samples)
    teacher = load_teacher(TeacherConfig(teacher=teacher_dir, device="cpu"))
    with torch.no_grad():
        logits = teacher.model(input_ids=batch["input_ids"]).logits
    assert logits.shape[-1] == vocab
    # stored top-k ids are the teacher's own argmax ordering (ties aside)
    top = logits.topk(K, dim=-1).indices
    target = batch["labels"] != -100
    agree = (top[..., 0] == batch["topk_ids"][..., 0])[target].float().mean()
    assert agree > 0.99
    for kind in ("kl_tail", "rs_kd"):
        loss, metrics = compute_loss(logits, batch, LossConfig(kind=kind), vocab_size=vocab)
        assert torch.isfinite(loss)
        if kind == "kl_tail":
            assert float(metrics["kd"]) < 0.01, float(metrics["kd"])
    # a student that knows nothing is far off: the check above can fail
    noise = torch.randn_like(logits)
    loss, metrics = compute_loss(noise, batch, LossConfig(kind="kl_tail"), vocab_size=vocab)
    assert float(metrics["kd"]) > 1.0


def test_a_train_step(big_cache, tmp_path):
    vocab, teacher_dir, uri, _ = big_cache
    result = train(
        TrainConfig(
            cache=uri,
            student=teacher_dir,
            out=str(tmp_path / "run"),
            steps=1,
            batch_size=2,
            warmup=1,
            num_workers=0,
            heldout_fraction=0.25,
            eval_every=100,
            eval_batches=1,
            device="cpu",
        )
    )
    assert np.isfinite(result["eval_kl"])
