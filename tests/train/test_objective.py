"""The trainer's objective on real cache batches: the fused path (body + output layer inside
the loss) against the dense path (the model's own logits, then compute_loss), and the small-cache
held-out split."""

from __future__ import annotations

import logging

import pytest
import torch

from logitcache.data import CacheDataset, make_dataloader
from logitcache.errors import ConfigError
from logitcache.format import open_cache
from logitcache.losses import LossConfig
from logitcache.train import train
from logitcache.train.objective import StudentObjective, check_fusable
from logitcache.train.student import preset_student


def real_batches(uri, n=2, batch_size=4):
    ds = CacheDataset(uri, split="all", shuffle=False)
    loader = make_dataloader(ds, batch_size=batch_size, num_workers=0)
    return [b for _, b in zip(range(n), loader)]


def grads_of(objective, batch):
    objective.model.zero_grad(set_to_none=True)
    loss, m = objective(batch)
    loss.backward()
    return loss.detach(), m, {k: p.grad.clone() for k, p in objective.model.named_parameters()}


@pytest.mark.parametrize(
    "loss",
    [
        LossConfig(kind="kl_tail"),
        LossConfig(kind="kl_tail", temperature=2.0, alpha=0.3),
        LossConfig(kind="rs_kd", alpha=0.1),
        LossConfig(kind="jsd", beta=0.3, chunk_size=37),
    ],
    ids=lambda c: f"{c.kind}-T{c.temperature}-a{c.alpha}",
)
def test_fused_matches_dense_on_real_cache_batches(kd_cache, loss):
    manifest = open_cache(kd_cache).manifest
    model = preset_student("tiny", manifest, seed=1)  # tied embeddings
    dense = StudentObjective(
        model, LossConfig(**{**loss.__dict__, "impl": "dense"}), vocab_size=manifest.vocab_size
    )
    fused = StudentObjective(model, loss, vocab_size=manifest.vocab_size)
    assert fused.fused and not dense.fused
    for batch in real_batches(kd_cache):
        l0, m0, g0 = grads_of(dense, batch)
        l1, m1, g1 = grads_of(fused, batch)
        torch.testing.assert_close(l1, l0, rtol=1e-5, atol=0)
        torch.testing.assert_close(m1["ce"], m0["ce"], rtol=1e-5, atol=0)
        for name, g in g0.items():
            torch.testing.assert_close(
                g1[name], g, rtol=1e-4, atol=1e-4 * float(g.abs().max()), msg=name
            )
        # evaluation rows too (kl_tail at T=1, CE, argmax)
        r0, r1 = dense.position_metrics(batch, "kl_tail"), fused.position_metrics(batch, "kl_tail")
        torch.testing.assert_close(r1["kd"], r0["kd"], rtol=1e-5, atol=1e-6)
        assert (r1["argmax"] == r0["argmax"]).float().mean() > 0.99  # ties may break apart


def _tiny_gemma2(vocab):
    from transformers import Gemma2Config, Gemma2ForCausalLM

    torch.manual_seed(0)
    cfg = Gemma2Config(
        vocab_size=vocab,
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=8,
        final_logit_softcapping=3.0,  # low, so the cap matters for these random logits
    )
    return Gemma2ForCausalLM(cfg).eval()


def test_softcapped_student_is_supported(kd_cache):
    manifest = open_cache(kd_cache).manifest
    model = _tiny_gemma2(manifest.vocab_size)
    assert check_fusable(model) == 3.0
    cfg = LossConfig(kind="kl_tail", alpha=0.2)
    dense = StudentObjective(
        model, LossConfig(kind="kl_tail", alpha=0.2, impl="dense"), vocab_size=manifest.vocab_size
    )
    fused = StudentObjective(model, cfg, vocab_size=manifest.vocab_size)
    batch = real_batches(kd_cache, n=1, batch_size=2)[0]
    l0, _, g0 = grads_of(dense, batch)
    l1, _, g1 = grads_of(fused, batch)
    torch.testing.assert_close(l1, l0, rtol=1e-5, atol=0)
    for name, g in g0.items():
        torch.testing.assert_close(g1[name], g, rtol=1e-4, atol=1e-4 * float(g.abs().max()))


def test_student_with_transformed_logits_is_refused(kd_cache):
    from transformers import LlamaForCausalLM

    class ScaledLogits(LlamaForCausalLM):  # e.g. a logit scale the fused path cannot know
        def forward(self, *args, **kwargs):
            out = super().forward(*args, **kwargs)
            out.logits = out.logits * 2.0
            return out

    manifest = open_cache(kd_cache).manifest
    base = preset_student("tiny", manifest)
    model = ScaledLogits(base.config)
    with pytest.raises(ConfigError, match="--loss-impl dense"):
        StudentObjective(model, LossConfig(), vocab_size=manifest.vocab_size)
    StudentObjective(model, LossConfig(impl="dense"), vocab_size=manifest.vocab_size)  # fine


def test_small_cache_holds_out_one_sequence_and_an_empty_split_is_reported(
    tmp_path, small_kd_cache, caplog
):
    kw = dict(student="tiny", steps=2, batch_size=4, num_workers=0, eval_every=2, warmup=0)
    eight = small_kd_cache(8)
    with caplog.at_level(logging.WARNING, logger="logitcache.train"):
        result = train(dict_config(eight, tmp_path / "r8", **kw))
    assert result["eval_tokens"] > 0  # at the default 5%, 8 ids hash to no held-out row
    assert "--heldout-fraction" in caplog.text

    caplog.clear()
    one = small_kd_cache(1)
    with caplog.at_level(logging.WARNING, logger="logitcache.train"):
        result = train(dict_config(one, tmp_path / "r1", heldout_fraction=0.2, **kw))
    assert result["eval_tokens"] == 0
    assert "held-out split" in caplog.text and "--heldout-fraction" in caplog.text


def dict_config(cache, out, **kw):
    from logitcache.train import TrainConfig

    return TrainConfig(cache=cache, out=str(out), **kw)
