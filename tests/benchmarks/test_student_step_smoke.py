"""Plumbing of ``python -m benchmarks.student_step`` at toy sizes (seconds): every measurement
runs, the JSON line carries the targets, and the fused loss is the smaller in memory."""

from __future__ import annotations

import json

from benchmarks import student_step


def test_student_step_benchmark_runs_and_reports_targets(capsys):
    argv = ["--quick", "--positions", "256", "--hidden", "32", "--vocab", "4096"]
    argv += ["--presets", "tiny", "--steps", "1", "--step-vocab", "2048", "--seq-len", "32"]
    student_step.main(argv)
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert {r["impl"] for r in out["loss"]} == {"dense", "fused"}
    assert all("seconds" in r and r["peak_bytes"] >= 0 for r in out["loss"]), out["loss"]
    targets = out["targets"]
    assert set(targets) == {
        "fused_over_dense_loss_memory_v4096",
        "fused_over_dense_loss_time_worst",
        "kd_step_over_ce_step_tiny",
    }
    assert all({"value", "target", "op", "unit"} <= set(t) for t in targets.values())
    # at 256 positions the dense [N, V] tensors already dwarf one fused chunk and grad_W
    assert targets["fused_over_dense_loss_memory_v4096"]["value"] < 0.5
    step = out["steps"][0]
    assert step["preset"] == "tiny" and step["kd_fused_s"] > 0 and step["ce_plain_s"] > 0
