"""Plumbing of ``python -m benchmarks.distill`` on the tiny random Llama teacher (seconds)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from benchmarks import distill
from benchmarks._distill_data import derive_topk, heldout_set
from benchmarks._distill_train import ARMS as TRAIN_ARMS
from benchmarks._distill_train import Schedule, train_arm

ARMS = ("ce", "online_full_kd", "topk8_tail", "rs50")  # one of each kind of target


def test_derive_topk_matches_exact_truncation():
    """A top-5 view of a (shuffled) top-20 batch equals the exact top-5 + tail of the full p."""
    g = torch.Generator().manual_seed(0)
    logp = torch.log_softmax(torch.randn(2, 3, 50, generator=g) * 3, -1)
    top20 = logp.topk(20, -1)
    perm = torch.randperm(20, generator=g)  # stored order need not be by probability
    tail20 = torch.log1p(-top20.values.exp().sum(-1))
    batch = {
        "topk_ids": top20.indices[..., perm],
        "topk_logprobs": top20.values[..., perm],
        "tail_logmass": tail20,
    }
    out = derive_topk(batch, 5)
    exact = logp.topk(5, -1)
    assert torch.equal(out["topk_ids"], exact.indices)
    torch.testing.assert_close(out["topk_logprobs"], exact.values)
    torch.testing.assert_close(out["tail_logmass"], torch.log1p(-exact.values.exp().sum(-1)))


def _argv(teacher, tmp_path, *extra):
    return [
        "--teacher", str(teacher), "--root", str(tmp_path / "art"),
        "--plot", str(tmp_path / "plot.png"), "--results", str(tmp_path / "distill.json"),
        "--prompts", "1", "--new-tokens", "4", "--paired-steps", "2", *extra,
    ]  # fmt: skip


def test_distill_benchmark_runs_end_to_end(tiny_llama_dir, tmp_path, capsys):
    argv = _argv(
        tiny_llama_dir, tmp_path, "--student", "tiny", "--train-tokens", "512",
        "--heldout-tokens", "128", "--seq-len", "64", "--epochs", "1", "--batch-size", "4",
        "--seeds", "1", "--arms", ",".join(ARMS),
    )  # fmt: skip
    # a run stopped at its first checkpoint continues from it, to the same result
    stopped = distill.main([*argv, "--stop-after-minutes", "0"])
    assert "interrupted" in stopped and "ce seed 0 stopped at step 1/" in stopped["interrupted"]
    capsys.readouterr()
    figures = distill.main(argv)
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert printed["arms"].keys() == figures["arms"].keys()
    assert set(figures["arms"]) == set(ARMS)
    assert json.loads((tmp_path / "distill.json").read_text()) == printed

    held = heldout_set(next((tmp_path / "art").glob("cache-heldout-*")), None, device="cpu")
    straight = train_arm(
        next(a for a in TRAIN_ARMS if a.name == "ce"),
        cache_uri=str(next((tmp_path / "art").glob("cache-train-*"))), held=held,
        student="tiny", seed=0, sched=Schedule(epochs=1, batch_size=4, lr=2e-3, warmup=4, evals=4),
        device=torch.device("cpu"),
    )  # fmt: skip
    assert np.isclose(straight["final"]["ce"], figures["arms"]["ce"]["heldout_ce"], rtol=1e-5)

    for name, row in figures["arms"].items():
        assert math.isfinite(row["heldout_ce"]) and row["heldout_ce"] > 0, name
        assert row["kl_teacher_student"] >= -1e-4, name  # a KL against the dense teacher
        assert 0.0 <= row["top1_agreement"] <= 1.0 and 0.0 <= row["ece"] <= 1.0, name
        assert 0.0 < row["alpha"] <= 1.0, name
        assert row["tokens_per_round_g4"] == pytest.approx(
            (1 - row["alpha"] ** 5) / (1 - row["alpha"])
        )
        assert row["assisted_tokens_per_round"] >= 1.0, name  # the teacher's own token at least
        assert row["epoch_s"] > 0, name
    for m in figures["draft"]["assisted"].values():
        assert m["rounds"] >= 1 and m["same_output"] == 1.0  # greedy: the teacher's own output
    u = figures["unigram"]
    assert u["ce"] > 0 and 0 < u["alpha"] <= 1
    q = figures["draft"]["quantized"]
    assert q["int8_bytes"] < q["float_bytes"] and math.isfinite(q["int8"]["ce"])
    b = figures["draft"]["alpha_bounds_best"]
    for k in (8, 32, 128):  # the cache's bounds bracket the exact acceptance
        assert b[f"k{k}_lower"] <= b["exact"] + 1e-5 <= b[f"k{k}_upper"] + 2e-5
    assert 0 < figures["bytes_per_token"]["topk8_tail"] < figures["bytes_per_token"]["topk128_tail"]
    assert figures["arms"]["ce"]["bytes_per_token"] is None  # no cache needed

    assert figures["limit_total_params"] > 1.0
    for t in figures["targets"].values():
        assert set(t) == {"value", "target", "op", "unit"} and math.isfinite(t["value"])
    assert (tmp_path / "plot.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # a re-run reuses the caches, the dense held-out log-probs and the finished arms
    again = distill.main(argv)
    assert again["scale"]["capture_s"] == figures["scale"]["capture_s"]
    for name in figures["arms"]:
        assert np.isclose(again["arms"][name]["heldout_ce"], figures["arms"][name]["heldout_ce"])


def test_gpu_scale_code_path_at_tiny_size(tiny_llama_dir, tmp_path):
    """``--scale gpu --dry-size tiny``: the gpu corpus (docs + stdlib source), its epochs rule
    (>= min_train_tokens) and its targets, on the CPU in seconds (generation and paired timing
    are covered above)."""
    figures = distill.main(
        _argv(
            tiny_llama_dir,
            tmp_path,
            "--scale",
            "gpu",
            "--dry-size",
            "tiny",
            "--arms",
            "ce,topk8_tail",
            "--seeds",
            "1",
        )
    )
    scale = figures["scale"]
    assert scale["name"] == "gpu-dry-tiny" and scale["corpus"] == "docs+source"
    assert scale["epochs"] == 2 and scale["train_tokens_per_run"] >= 1000
    assert figures["targets"]["train_tokens_per_run"]["target"] == 20_000_000
    assert figures["flop_estimate"]["student_flops"] > 0
    assert json.loads((tmp_path / "distill.json").read_text())["scale"]["name"] == "gpu-dry-tiny"


def test_close_arms_are_those_within_one_percent():
    assert distill.close_arms({"a": 7.00, "b": 7.06, "c": 7.5, "d": 10.0}) == {"a", "b"}
    assert distill.close_arms({"a": 7.0}) == set()


def test_prompts_reach_the_count_from_windows_further_into_short_heldout_sets():
    from benchmarks._distill_data import Heldout
    from benchmarks._distill_draft import prompts_from_heldout

    ids = torch.arange(3 * 20).reshape(3, 20)
    mask = torch.ones_like(ids, dtype=torch.bool)
    mask[2, 9:] = False  # row 2 is too short for a second window
    held = Heldout(
        input_ids=ids, labels=ids, attention_mask=mask, teacher_logprobs=torch.zeros(0, 1)
    )
    prompts = prompts_from_heldout(held, count=5, length=4)
    starts = [int(p[0, 0]) for p in prompts]
    # every row's start first, then the windows 8 tokens in; row 2 (9 tokens) has room for one
    assert starts == [0, 20, 40, 8, 28]
    assert all(p.shape == (1, 4) for p in prompts)
    # offset 16 leaves no room for a continuation in a 20-token row
    assert len(prompts_from_heldout(held, count=50, length=4)) == 5
    assert prompts_from_heldout(held, count=0, length=4) == []
