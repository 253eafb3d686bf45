"""The student trainer end to end on a small real cache (tiny Llama teacher, pydoc corpus)."""

from __future__ import annotations

import json
import os
import shutil

import pytest
import torch

from logitcache.cli import main as cli_main
from logitcache.errors import ConfigError, VocabularyMismatchError
from logitcache.format import open_cache
from logitcache.losses import LossConfig
from logitcache.train import TrainConfig, build_student, train
from logitcache.train.metrics import read_metrics


def config(cache, out, **kw) -> TrainConfig:
    base = dict(
        cache=cache,
        out=str(out),
        student="tiny",
        batch_size=8,
        lr=3e-3,
        warmup=2,
        heldout_fraction=0.2,
        num_workers=0,
        eval_every=100,
        log_every=1,
    )
    return TrainConfig(**{**base, **kw})


def test_short_run_lowers_heldout_kl_and_writes_artifacts(kd_cache, tmp_path):
    out = tmp_path / "run"
    result = train(config(kd_cache, out, steps=40, eval_every=20))
    records = read_metrics(str(out / "metrics.jsonl"))
    evals = [r for r in records if r["split"] == "eval"]
    assert [r["step"] for r in evals] == [0, 20, 40]
    first, last = evals[0], evals[-1]
    # the teacher is a random network: a tiny student learns its marginals and some context
    # quickly (~11% lower KL in 40 steps), the rest slowly; 5% is far outside noise here
    assert last["eval_kl"] < 0.95 * first["eval_kl"], (first, last)
    # (no claim on eval_ce: a random teacher says nothing about the true text)
    assert all(r["eval_ce"] > 0 and r["eval_tokens"] > 0 for r in evals)
    assert last["eval_top1"] > first["eval_top1"]
    assert result["eval_kl"] == pytest.approx(last["eval_kl"])
    # the drafter-readiness bounds from the cache: ordered, and rising as the KL falls
    assert all(0 < r["eval_alpha_lower"] <= r["eval_alpha_upper"] <= 1 for r in evals)
    assert last["eval_alpha_lower"] > first["eval_alpha_lower"], (first, last)
    assert last["eval_tokens_per_round_g4"] >= 1.0
    assert [r["step"] for r in records if r["split"] == "train"] == list(range(1, 41))

    png = out / "metrics.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    from transformers import AutoModelForCausalLM

    student = AutoModelForCausalLM.from_pretrained(str(out / "student"))
    assert (out / "student" / "model.safetensors").exists()
    # the preset student ships the teacher's tokenizer (found via manifest.teacher.source)
    from transformers import AutoTokenizer

    from logitcache.train.student import vocab_sha256

    tokenizer = AutoTokenizer.from_pretrained(str(out / "student"))
    assert vocab_sha256(tokenizer) == open_cache(kd_cache).manifest.tokenizer["vocab_sha256"]
    assert (
        student.get_output_embeddings().weight.shape[0] == open_cache(kd_cache).manifest.vocab_size
    )
    ckpt = torch.load(out / "checkpoint.pt", weights_only=True)  # plain, code-free content
    torch.testing.assert_close(
        student.state_dict()["model.embed_tokens.weight"],
        ckpt["model"]["model.embed_tokens.weight"],
    )


def test_resume_continues_exactly(kd_cache, tmp_path):
    straight = tmp_path / "straight"
    split = tmp_path / "split"
    kw = dict(steps=8, eval_every=100, batch_size=4)
    train(config(kd_cache, straight, **kw))
    first = train(config(kd_cache, split, stop_after=4, **kw))
    assert first["step"] == 4 and not first["finished"]
    assert not (split / "student").exists()
    train(config(kd_cache, split, resume=True, **kw))

    a = torch.load(straight / "checkpoint.pt", weights_only=True)
    b = torch.load(split / "checkpoint.pt", weights_only=True)
    assert a["step"] == b["step"] == 8
    for name, tensor in a["model"].items():
        torch.testing.assert_close(b["model"][name], tensor, rtol=1e-5, atol=1e-6)
    loss_a = [
        r["loss"] for r in read_metrics(str(straight / "metrics.jsonl")) if r["split"] == "train"
    ]
    loss_b = [
        r["loss"] for r in read_metrics(str(split / "metrics.jsonl")) if r["split"] == "train"
    ]
    assert len(loss_b) == 8  # resumed log reads as one run
    assert loss_b == pytest.approx(loss_a, rel=1e-5)


def test_resume_without_checkpoint_is_refused(kd_cache, tmp_path):
    with pytest.raises(ConfigError, match="no checkpoint"):
        train(config(kd_cache, tmp_path / "none", steps=2, resume=True))


def _student_dir(tmp_path, name, **kw):
    from logitcache.teachers.testing import make_tiny_llama

    return str(make_tiny_llama(tmp_path / name, num_layers=1, hidden_size=32, **kw))


def test_vocabulary_mismatch_is_refused_and_padding_accepted(kd_cache, tmp_path):
    from transformers import AutoTokenizer

    manifest = open_cache(kd_cache).manifest
    smaller = _student_dir(tmp_path, "small-vocab", vocab_size=300)
    with pytest.raises(VocabularyMismatchError, match="resize_token_embeddings"):
        build_student(smaller, manifest)

    # same sizes, different tokenizer: ids would mean different strings
    other = _student_dir(tmp_path, "other-tok", vocab_size=manifest.tokenizer["tokenizer_size"])
    tok = AutoTokenizer.from_pretrained(other)
    tok.add_tokens(["<|not-in-the-teacher|>"])
    tok.save_pretrained(other)
    with pytest.raises(VocabularyMismatchError, match="vocabulary sha256"):
        build_student(other, manifest)

    # the teacher's tokenizer with an embedding padded beyond it: accepted
    padded = _student_dir(
        tmp_path, "padded", vocab_size=manifest.tokenizer["tokenizer_size"], extra_logits=64
    )
    model, tokenizer = build_student(padded, manifest)
    assert model.get_output_embeddings().weight.shape[0] == manifest.vocab_size + 64
    assert tokenizer is not None

    # and through the CLI: a clear error, exit status 2, nothing trained
    out = tmp_path / "cli"
    code = cli_main(
        ["train", "--cache", kd_cache, "--student", smaller, "--out", str(out), "--steps", "1"]
    )
    assert code == 2
    assert not (out / "checkpoint.pt").exists()


def test_cli_trains_with_rs_kd_and_padded_student(kd_cache, tmp_path, capsys, tiny_llama_dir):
    padded = _student_dir(tmp_path, "padded", vocab_size=512, extra_logits=32)
    out = tmp_path / "rs"
    argv = [
        "train",
        "--cache",
        kd_cache,
        "--student",
        padded,
        "--out",
        str(out),
        "--steps",
        "6",
        "--loss",
        "rs_kd",
        "--alpha",
        "0.1",
        "--batch-size",
        "4",
        "--grad-accum",
        "2",
        "--eval-every",
        "3",
        "--num-workers",
        "0",
        "--heldout-fraction",
        "0.2",
        "--crop-len",
        "32",
    ]
    assert cli_main(argv) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["step"] == 6 and result["finished"]
    evals = [r for r in read_metrics(str(out / "metrics.jsonl")) if r["split"] == "eval"]
    assert [r["step"] for r in evals] == [0, 3, 6]
    assert all(r["eval_tokens"] > 0 and 0 <= r["eval_top1"] <= 1 for r in evals)
    assert os.path.exists(out / "student" / "tokenizer.json")  # the student's own tokenizer


def test_epochs_mode_stops_when_data_runs_out(kd_cache, tmp_path):
    result = train(config(kd_cache, tmp_path / "ep", epochs=1, batch_size=16, eval_batches=1))
    n_train = sum(
        1 for r in read_metrics(str(tmp_path / "ep" / "metrics.jsonl")) if r["split"] == "train"
    )
    assert result["finished"] and result["step"] == n_train
    # ~96 train rows of 120 at heldout 0.2, 16 per step
    assert 5 <= result["step"] <= 7


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"steps": 5, "epochs": 1}, "not both"),
        ({"steps": 0}, "steps must be a positive"),
        ({"heldout_fraction": 0.0}, "heldout_fraction"),
        ({"device": "tpu"}, "device must be"),
        ({"loss": {"kind": "nope"}}, "choose one of"),
        ({"loss": "kl_tail"}, r"TrainConfig\.loss must be a LossConfig \(or a dict"),
    ],
)
def test_train_config_validation(kwargs, match, tmp_path):
    with pytest.raises(ConfigError, match=match):
        TrainConfig(cache="c", out=str(tmp_path), **kwargs)


def test_train_config_keeps_credentials_out_of_checkpoints(tmp_path):
    cfg = TrainConfig(
        cache="s3://b/c",
        out=str(tmp_path),
        storage_options='{"secret": "x"}',
        loss=LossConfig(kind="jsd", beta=0.2),
    )
    d = cfg.to_dict()
    assert d["storage_options"] == "<redacted>"
    assert d["loss"]["beta"] == 0.2
    shutil.rmtree(tmp_path)


@pytest.mark.slow
def test_torchrun_two_cpu_ranks_with_gloo(kd_cache, tmp_path):
    """DDP over gloo: two ranks split the data, rank 0 writes the run, the student loads."""
    import subprocess
    import sys

    out = tmp_path / "ddp"
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc-per-node",
        "2",
        "--master-addr",
        "127.0.0.1",
        "--master-port",
        str(_free_port()),
        "-m",
        "logitcache",
        "train",
        "--cache",
        kd_cache,
        "--out",
        str(out),
        "--steps",
        "4",
        "--batch-size",
        "4",
        "--device",
        "cpu",
        "--num-workers",
        "0",
        "--heldout-fraction",
        "0.2",
        "--eval-every",
        "2",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=240, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ckpt = torch.load(out / "checkpoint.pt", weights_only=True)
    assert ckpt["step"] == 4 and len(ckpt["loader"]) == 2  # one loader position per rank
    evals = [r for r in read_metrics(str(out / "metrics.jsonl")) if r["split"] == "eval"]
    assert [r["step"] for r in evals] == [0, 2, 4]
    # eval sums over both ranks' halves of the held-out split: all of it, once
    single = train(config(kd_cache, tmp_path / "one", steps=1, eval_batches=None))
    assert evals[0]["eval_tokens"] == single["eval_tokens"]
    assert (out / "student" / "model.safetensors").exists()


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("preset,low,high", [("tiny", 1.0e6, 2.0e6), ("small", 10e6, 20e6)])
def test_presets_take_the_cache_vocabulary(preset, low, high):
    """Sized for SmolLM2's vocabulary (49,152 ids), special ids from the manifest."""
    from logitcache.format import Manifest

    manifest = Manifest(
        teacher={"name": "smollm2-135m"},
        tokenizer={
            "vocab_size": 49152,
            "tokenizer_size": 49152,
            "bos_token_id": 1,
            "eos_token_id": 2,
            "pad_token_id": 2,
        },
        capture={"top_k": 64, "seq_len": 512},
        codec={"spec": "raw"},
    )
    model, tokenizer = build_student(preset, manifest)
    n = sum(p.numel() for p in model.parameters())
    assert low <= n <= high, n
    assert model.config.vocab_size == 49152 and model.config.eos_token_id == 2
    assert tokenizer is None


def test_cli_loss_choices_match_the_registry():
    import argparse

    from logitcache.cli.train import add_parser
    from logitcache.losses import LOSSES

    p = argparse.ArgumentParser()
    add_parser(p)
    (loss,) = [a for a in p._actions if "--loss" in a.option_strings]
    assert tuple(loss.choices) == tuple(LOSSES)
