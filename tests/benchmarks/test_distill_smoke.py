"""Plumbing of ``python -m benchmarks.distill`` on the tiny random Llama teacher (seconds)."""

from __future__ import annotations

import json
import math

import numpy as np
import torch

from benchmarks import distill
from benchmarks._distill_data import derive_topk

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


def test_distill_benchmark_runs_end_to_end(tiny_llama_dir, tmp_path, capsys):
    argv = [
        "--teacher", str(tiny_llama_dir), "--root", str(tmp_path / "art"),
        "--plot", str(tmp_path / "plot.png"), "--student", "tiny",
        "--train-tokens", "512", "--heldout-tokens", "128", "--seq-len", "64",
        "--epochs", "1", "--batch-size", "4", "--seeds", "1", "--arms", ",".join(ARMS),
    ]  # fmt: skip
    figures = distill.main(argv)
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert printed["arms"].keys() == figures["arms"].keys()
    assert set(figures["arms"]) == set(ARMS)

    for name, row in figures["arms"].items():
        assert math.isfinite(row["heldout_ce"]) and row["heldout_ce"] > 0, name
        assert row["kl_teacher_student"] >= -1e-4, name  # a KL against the dense teacher
        assert 0.0 <= row["top1_agreement"] <= 1.0 and 0.0 <= row["ece"] <= 1.0, name
        assert row["epoch_s"] > 0, name
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
