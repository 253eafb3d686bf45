"""The capture benchmark's arithmetic, without a measurement: the target's ratio and the
sweep's unit choice."""

from __future__ import annotations

from benchmarks import capture


def test_target_ratio_uses_the_steady_window_and_both_bare_runs():
    before = {"tokens": 40_000, "seconds": 100.0, "tokens_per_s": 400.0}
    after = {"tokens": 40_000, "seconds": 80.0, "tokens_per_s": 500.0}
    steady = {"tokens": 32_000, "seconds": 80.0, "tokens_per_s": 400.0}
    r = capture.build_ratios(steady, before, after, device="cpu")
    # pooled bare = 80,000 tokens / 180 s = 444.4 tok/s, not the mean of the two rates (450)
    assert r["vs_pooled"] == round(400.0 / (80_000 / 180.0), 3) == 0.9
    assert r["vs_before_after"] == [1.0, 0.8]
    assert r["window_ok"] and r["target"] == 0.90
    assert capture.build_ratios(steady, before, after, device="cuda:0")["target"] == 0.95


def test_a_short_window_is_flagged_and_a_missing_one_has_no_ratio():
    bare = {"tokens": 1000, "seconds": 1.0, "tokens_per_s": 1000.0}
    short = {"tokens": 29_999, "seconds": 30.0, "tokens_per_s": 999.97}
    assert not capture.build_ratios(short, bare, bare, device="cpu")["window_ok"]
    none = {"units": 0, "tokens": 0, "seconds": None, "tokens_per_s": None}
    r = capture.build_ratios(none, bare, bare, device="cpu")
    assert r["vs_pooled"] is None and r["vs_before_after"] == [None, None]


def test_unit_choice_is_the_smallest_unit_whose_fixed_cost_is_within_its_share():
    units = [8192, 16384, 32768, 65536]
    # 400 tok/s: an 8192-token unit scores in 20.5 s; 0.1 s is 0.5% of it
    assert capture.pick_unit_tokens(units, 400.0, 0.1, 0.01) == 8192
    # 40,000 tok/s (a GPU): 8192 -> 0.2 s, 65536 -> 1.64 s; 0.01 s fits only from 65536 on
    assert capture.pick_unit_tokens(units, 40_000.0, 0.01, 0.01) == 65536
    # nothing fits: the largest candidate
    assert capture.pick_unit_tokens(units, 1e6, 1.0, 0.01) == 65536
