"""The steady-state window (capture/timing.py): arithmetic on hand-made score intervals, and
the window a real in-process build records."""

from __future__ import annotations

import pytest
from config_sections import capture_config

from logitcache.capture import build_cache
from logitcache.capture.timing import ScoredUnit, steady_window


def _unit(worker, start, end, tokens=1000):
    return ScoredUnit(worker=worker, start=start, end=end, tokens=tokens)


def test_window_starts_at_the_first_units_scoring_end_not_its_commit():
    # One actor, 1000 tokens per unit in 10 s each; unit 1 ends at t=10 (its commit comes
    # later, while unit 2 is already being scored). Units 2..4 hold 3000 tokens in 30 s.
    units = [_unit("a", 0, 10), _unit("a", 10, 20), _unit("a", 20, 30), _unit("a", 30, 40)]
    w = steady_window(units)
    assert w == {
        "units": 3,
        "tokens": 3000,
        "seconds": 30.0,
        "tokens_per_s": 100.0,
        "scored_s": 30.0,
    }
    # commit order is not score order: the result depends on the intervals only
    assert steady_window(units[::-1]) == w


def test_rate_never_exceeds_what_the_actor_scored_and_counts_idle_gaps():
    # a 5 s wait before unit 3 (e.g. back-pressure) is inside the window
    units = [_unit("a", 0, 10), _unit("a", 10, 20), _unit("a", 25, 35)]
    w = steady_window(units)
    assert w["tokens"] == 2000 and w["seconds"] == 25.0 and w["scored_s"] == 20.0
    assert w["tokens_per_s"] == pytest.approx(80.0)
    assert w["tokens_per_s"] <= 2000 / 20.0


def test_several_workers_drop_each_ones_first_unit():
    units = [
        _unit("a", 0, 10),
        _unit("b", 2, 14),  # b loaded later: its first unit is dropped too
        _unit("a", 10, 20),
        _unit("b", 14, 26),
        _unit("a", 20, 30, tokens=500),
    ]
    w = steady_window(units)
    assert w["units"] == 3 and w["tokens"] == 2500
    assert w["seconds"] == 20.0  # from a's first end (10) to the last end (30)
    assert w["scored_s"] == 32.0  # two workers: up to twice the window


def test_no_steady_state_with_one_unit_per_worker():
    w = steady_window([_unit("a", 0, 10), _unit("b", 0, 12)])
    assert w["units"] == 0 and w["tokens_per_s"] is None and w["seconds"] is None
    assert steady_window([])["tokens_per_s"] is None


def test_a_build_records_its_steady_window_and_drain(teacher_dir, pydoc_jsonl, tmp_path):
    cfg = capture_config(
        teacher=teacher_dir,
        corpus=[pydoc_jsonl],
        out=str(tmp_path / "cache"),
        top_k=8,
        seq_len=64,
        max_tokens=1000,
        unit_tokens=300,
        use_ray=False,
        progress="off",
        codec="raw",
        dtype="float32",
        device="cpu",
    )
    m = build_cache(cfg)
    run = m.stats["run"]
    steady = run["steady"]
    first = m.shards[0].tokens  # in-process units are scored and committed in plan order
    assert steady["units"] == len(m.shards) - 1
    assert steady["tokens"] == m.num_tokens - first
    # in-process, each unit's encode and write sit between two scorings: inside the window
    assert 0 < steady["scored_s"] <= steady["seconds"]
    # ``seconds`` is stored to the millisecond: a window of a few ms carries that rounding
    rounding = 0.0005 / steady["seconds"]
    assert steady["tokens_per_s"] == pytest.approx(
        steady["tokens"] / steady["seconds"], rel=0.01 + rounding
    )
    assert run["drain_s"] is not None and run["drain_s"] >= 0
