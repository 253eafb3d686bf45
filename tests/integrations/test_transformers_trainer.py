"""DistillationTrainer and SFTDistillationTrainer on a real tiny cache: every sample once per
epoch (one process here, two ranks in the slow torchrun test), kd/ce logged, the saved
student loads with from_pretrained, and Trainer's own resume continues with exactly the
remaining samples."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import torch
from transformers import TrainerCallback, TrainingArguments

from logitcache.data import CacheDataset, split_mask
from logitcache.format import open_cache
from logitcache.integrations.transformers import DistillationTrainer
from logitcache.losses import LossConfig

SCRIPT = Path(__file__).with_name("ddp_trainer_script.py")


def _args(out, **kw) -> TrainingArguments:
    base = dict(
        per_device_train_batch_size=4,
        logging_steps=1,
        report_to=[],
        use_cpu=True,
        learning_rate=1e-3,
        save_strategy="no",
        disable_tqdm=True,
    )
    return TrainingArguments(str(out), **{**base, **kw})


class Recording(DistillationTrainer):
    """Records the sample ids of every micro-batch the trainer computes a loss on."""

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.seen: list[list[str]] = []

    def compute_loss(self, model, inputs, *a, **kw):
        if model.training:
            self.seen.append(list(inputs["sample_id"]))
        return super().compute_loss(model, inputs, *a, **kw)


def _all_ids(uri: str) -> list[str]:
    return [s["sample_id"] for s in open_cache(uri).iter_samples()]


def test_two_epochs_see_every_sample_once_each_and_the_student_loads(
    int_cache, tiny_student, tmp_path
):
    from transformers import AutoModelForCausalLM

    trainer = Recording(
        model=tiny_student,
        args=_args(
            tmp_path / "run",
            num_train_epochs=2,
            gradient_accumulation_steps=2,
            dataloader_num_workers=2,  # workers batch separately: counts must still add up
        ),
        cache=CacheDataset(int_cache, split="train", heldout_fraction=0.2),
        eval_cache=CacheDataset(int_cache, split="heldout", heldout_fraction=0.2),
        loss=LossConfig(kind="kl_tail", temperature=2.0, alpha=0.2),
    )
    # max_steps was derived from the epochs: each epoch a whole number of optimizer steps
    per_epoch = trainer.train_batches.batches_in_epoch(0)
    assert per_epoch % 2 == 0 and trainer.args.max_steps == trainer.train_batches.steps_in_epochs(2)
    trainer.train()
    everything = _all_ids(int_cache)
    train_ids = [i for i, k in zip(everything, split_mask(everything, "train", 0.2)) if k]
    epochs = [trainer.seen[: len(trainer.seen) // 2], trainer.seen[len(trainer.seen) // 2 :]]
    for batches in epochs:
        ids = [i for b in batches for i in b]
        assert Counter(ids) == Counter(train_ids)
    assert epochs[0] != epochs[1]  # reshuffled
    logs = [h for h in trainer.state.log_history if "loss" in h]
    assert logs and all("kd" in h and "ce" in h for h in logs)
    # loss = (1 - alpha) * T^2 * KD + alpha * CE with kd already T^2-scaled
    h = logs[-1]
    assert h["loss"] == pytest.approx(0.8 * h["kd"] + 0.2 * h["ce"], rel=0.02)
    metrics = trainer.evaluate()
    assert metrics["eval_tokens"] > 0 and {"eval_loss", "eval_kd", "eval_ce"} <= set(metrics)
    trainer.save_model(str(tmp_path / "student"))
    loaded = AutoModelForCausalLM.from_pretrained(str(tmp_path / "student"))
    for (name, a), b in zip(tiny_student.state_dict().items(), loaded.state_dict().values()):
        assert torch.equal(a.cpu(), b), name


def _ids_of(trainer) -> list[str]:
    return [i for b in trainer.seen for i in b]


class _StopAt(TrainerCallback):
    def __init__(self, step):
        self.step = step

    def on_step_end(self, args, state, control, **kw):
        if state.global_step >= self.step:
            control.should_training_stop = True


def test_checkpoint_resume_continues_mid_epoch_with_exactly_the_remaining_samples(
    int_cache, tmp_path
):
    from logitcache.train.student import preset_student

    manifest = open_cache(int_cache).manifest

    def trainer(out, callbacks=()):
        return Recording(
            model=preset_student("tiny", manifest, seed=0),
            args=_args(
                out,
                max_steps=5,
                gradient_accumulation_steps=2,
                save_strategy="steps",
                save_steps=2,
                seed=3,
            ),
            cache=int_cache,
            callbacks=list(callbacks),
        )

    straight = trainer(tmp_path / "a")
    straight.train()
    first = trainer(tmp_path / "b", callbacks=[_StopAt(2)])
    first.train()
    ckpt = tmp_path / "b" / "checkpoint-2"
    assert (ckpt / "logitcache_loader" / "rank-0.pt").exists()
    resumed = trainer(tmp_path / "b")
    resumed.train(resume_from_checkpoint=str(ckpt))
    assert _ids_of(first) + _ids_of(resumed) == _ids_of(straight)
    # 5 steps x 2 micro-batches cross into the second epoch: the resumed run continued it
    assert len(straight.seen) == 10 > straight.train_batches.batches_in_epoch(0)
    for (name, a), b in zip(
        straight.model.state_dict().items(), resumed.model.state_dict().values()
    ):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=name)


def test_resume_refuses_a_checkpoint_without_loader_state(int_cache, tiny_student, tmp_path):
    from logitcache.errors import LoaderStateError

    (tmp_path / "run" / "checkpoint-1").mkdir(parents=True)
    t = DistillationTrainer(
        model=tiny_student, args=_args(tmp_path / "run", max_steps=1), cache=int_cache
    )
    with pytest.raises(LoaderStateError, match="ignore_data_skip"):
        t.train(resume_from_checkpoint=str(tmp_path / "run" / "checkpoint-1"))


def test_trl_sft_trainer_distils_from_the_cache(int_cache, tiny_student, tiny_llama_dir, tmp_path):
    from transformers import AutoTokenizer
    from trl import SFTConfig

    from logitcache.integrations.trl import SFTDistillationTrainer

    class RecordingSFT(SFTDistillationTrainer):
        seen: list = []

        def compute_loss(self, model, inputs, *a, **kw):
            if model.training:
                self.seen.append(list(inputs["sample_id"]))
            return super().compute_loss(model, inputs, *a, **kw)

    args = SFTConfig(
        str(tmp_path / "sft"),
        num_train_epochs=1,
        per_device_train_batch_size=8,
        logging_steps=1,
        report_to=[],
        use_cpu=True,
        save_strategy="no",
        gradient_checkpointing=False,
        disable_tqdm=True,
    )
    trainer = RecordingSFT(
        model=tiny_student,
        args=args,
        cache=int_cache,
        processing_class=AutoTokenizer.from_pretrained(str(tiny_llama_dir)),
        loss=LossConfig(alpha=0.5),
    )
    trainer.train()
    assert Counter(i for b in trainer.seen for i in b) == Counter(_all_ids(int_cache))
    logs = [h for h in trainer.state.log_history if "loss" in h]
    assert logs and all("kd" in h and "ce" in h for h in logs)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_torchrun_two_ranks_see_every_sample_exactly_once_per_epoch(int_cache, tmp_path):
    """Two gloo ranks under torchrun: accelerate must not re-dispatch the cache's own rank
    split; the ranks' shares are unequal, fillers keep the step counts equal."""
    out = tmp_path / "ddp"
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
        "--master-addr", "127.0.0.1", "--master-port", str(_free_port()),
        str(SCRIPT), int_cache, str(out),
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=280, env=env)
    assert proc.returncode == 0, proc.stderr[-4000:]
    records = [json.loads((out / f"seen-{r}.json").read_text()) for r in range(2)]
    # gradients were all-reduced: both ranks hold the same student (fused or dense loss)
    assert records[0]["params"] == pytest.approx(records[1]["params"], rel=1e-6)
    ranks = [r["seen"] for r in records]
    assert len(ranks[0]) == len(ranks[1])  # same number of micro-batches per rank
    for epoch in range(2):
        ids = [i for r in ranks for b in r if b["epoch"] == epoch for i in b["ids"]]
        assert Counter(ids) == Counter(_all_ids(int_cache))
    assert set(ranks[0][0]["ids"]).isdisjoint(ranks[1][0]["ids"])
    assert (out / "student" / "model.safetensors").exists()


def test_fused_loss_is_the_default_for_a_causal_lm_and_matches_dense(int_cache, tmp_path):
    import dataclasses

    from logitcache.train.student import preset_student

    if "impl" not in {f.name for f in dataclasses.fields(LossConfig)}:
        pytest.skip("this logitcache has no fused loss (LossConfig.impl)")
    manifest = open_cache(int_cache).manifest
    runs = {}
    for impl in ("fused", "dense"):
        student = preset_student("tiny", manifest, seed=0)
        t = DistillationTrainer(
            model=student,
            args=_args(tmp_path / impl, max_steps=2, seed=1),
            cache=int_cache,
            loss=LossConfig(alpha=0.2, temperature=2.0, impl=impl),
        )
        assert t.fused is (impl == "fused")
        t.train()
        runs[impl] = [h["loss"] for h in t.state.log_history if "loss" in h], student
    assert runs["fused"][0] == pytest.approx(runs["dense"][0], rel=1e-5)
    for a, b in zip(runs["fused"][1].parameters(), runs["dense"][1].parameters()):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
