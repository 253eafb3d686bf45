"""DistillationTrainer with cross_tokenizer: a student on its own BPE trained from the tiny
teacher's cache; every sample once per epoch, kd/ce logged, eval on the cache, clear errors."""

from __future__ import annotations

from collections import Counter

import pytest
import torch
from transformers import TrainingArguments

from logitcache.data import CacheDataset, split_mask
from logitcache.errors import ConfigError
from logitcache.format import open_cache
from logitcache.integrations.transformers import DistillationTrainer
from logitcache.losses import LossConfig


@pytest.fixture(scope="module")
def student_and_tokenizer(tmp_path_factory):
    from transformers import LlamaConfig, LlamaForCausalLM

    from logitcache.crosstok.testing import make_student_tokenizer

    tok = make_student_tokenizer(tmp_path_factory.mktemp("xtok_tr"), vocab_size=350)
    config = LlamaConfig(
        vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
        pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id,
    )  # fmt: skip
    torch.manual_seed(0)
    return LlamaForCausalLM(config), tok


class Recording(DistillationTrainer):
    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.seen: list[str] = []

    def compute_loss(self, model, inputs, *a, **kw):
        if model.training:
            self.seen.extend(inputs["sample_id"])
        return super().compute_loss(model, inputs, *a, **kw)


def _args(out, **kw):
    base = dict(
        per_device_train_batch_size=4, logging_steps=1, report_to=[], use_cpu=True,
        learning_rate=3e-3, save_strategy="no", disable_tqdm=True, num_train_epochs=1,
    )  # fmt: skip
    return TrainingArguments(str(out), **{**base, **kw})


def test_gold_trainer_sees_every_sample_once_and_logs_kd(
    int_cache, student_and_tokenizer, tmp_path
):
    model, tok = student_and_tokenizer
    trainer = Recording(
        model=model, args=_args(tmp_path / "run"), processing_class=tok,
        cache=CacheDataset(int_cache, split="train", heldout_fraction=0.2),
        eval_cache=CacheDataset(int_cache, split="heldout", heldout_fraction=0.2),
        loss=LossConfig(alpha=0.5), cross_tokenizer="gold",
    )  # fmt: skip
    trainer.train()
    everything = [s["sample_id"] for s in open_cache(int_cache).iter_samples()]
    train_ids = [i for i, k in zip(everything, split_mask(everything, "train", 0.2)) if k]
    assert Counter(trainer.seen) == Counter(train_ids)
    logs = [h for h in trainer.state.log_history if "loss" in h]
    assert logs and all(h["kd"] > 0 and h["ce"] > 0 for h in logs)
    assert logs[-1]["loss"] == pytest.approx(0.5 * logs[-1]["kd"] + 0.5 * logs[-1]["ce"], rel=0.02)
    metrics = trainer.evaluate()
    assert metrics["eval_tokens"] > 0 and metrics["eval_kd"] > 0


def test_cross_tokenizer_trainer_errors_name_the_fix(int_cache, student_and_tokenizer, tmp_path):
    model, tok = student_and_tokenizer
    with pytest.raises(ConfigError, match="processing_class"):
        DistillationTrainer(
            model=model, args=_args(tmp_path / "a"), cache=int_cache, cross_tokenizer="uld"
        )
    with pytest.raises(ConfigError, match="shared tokenizer"):
        DistillationTrainer(
            model=model, args=_args(tmp_path / "b"), cache=int_cache, processing_class=tok,
            cross_tokenizer="uld", loss=LossConfig(kind="jsd"),
        )  # fmt: skip
