"""Plumbing of ``python -m benchmarks.cross_tokenizer`` on the tiny random Llama teacher."""

from __future__ import annotations

import json
import math

from benchmarks import cross_tokenizer


def test_cross_tokenizer_benchmark_runs_end_to_end(tiny_llama_dir, tmp_path, capsys):
    argv = [
        "--teacher", str(tiny_llama_dir), "--root", str(tmp_path / "art"), "--student", "tiny",
        "--student-vocab", "300", "--train-tokens", "512", "--heldout-tokens", "128",
        "--seq-len", "64", "--epochs", "1", "--batch-size", "4", "--same-tokenizer",
        "--num-workers", "0",
    ]  # fmt: skip
    figures = cross_tokenizer.main(argv)
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert printed["arms"].keys() == figures["arms"].keys()
    assert set(figures["arms"]) == {"ce", "uld", "gold", "same_tokenizer_kl_tail"}
    for name, row in figures["arms"].items():
        assert math.isfinite(row["eval_bpb"]) and row["eval_bpb"] > 0, name
        assert 0 < row["eval_kd_coverage"] <= 1, name
    assert figures["arms"]["same_tokenizer_kl_tail"]["eval_kd_coverage"] > 0.9  # same tokens
    assert math.isfinite(figures["teacher_heldout"]["eval_bpb"])
    rate = figures["retokenise"]
    assert rate["cross_collate_teacher_tokens_per_s"] > 0 and rate["vocab_one_to_one"] > 0
    assert 0 < figures["stored_offsets_bytes_per_token"] < 2
    assert set(figures["targets"]) == {"uld_bpb_vs_ce_only", "gold_bpb_vs_ce_only"}
    for t in figures["targets"].values():
        assert set(t) == {"value", "target", "op", "unit"} and math.isfinite(t["value"])
