"""The steady-state window of a capture run, from the teacher workers' own scoring intervals.

Each scored unit carries when its worker started and finished scoring it (wall clock, so
workers on different machines compare). The steady state excludes each worker's first unit
(teacher warm-up): it is the tokens of every later unit over the time from the earliest end of
a first unit to the latest end of any unit. Every unit counted was scored inside that window
(a worker scores one unit at a time, so its second unit starts after its first ends), so the
rate can never exceed what the workers actually scored, however early the driver commits.
Timing from the first *commit* instead would start the clock while a worker is already into
its second unit and overstate the rate.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, kw_only=True)
class ScoredUnit:
    """When one worker scored one unit (``time.time()`` seconds) and how many tokens it held."""

    worker: str
    start: float
    end: float
    tokens: int


def steady_window(units: Iterable[ScoredUnit]) -> dict[str, Any]:
    """Units 2..n of every worker over the time from the first unit's end to the last end.

    Returns ``units``, ``tokens``, ``seconds``, ``tokens_per_s`` (``None`` when no worker
    scored more than one unit, i.e. there is no steady state to measure) and ``scored_s``, the
    workers' summed scoring time inside the window: with one worker, ``seconds - scored_s`` is
    how long it waited for work (a starved or back-pressured actor).
    """
    by_worker: dict[str, list[ScoredUnit]] = {}
    for u in units:
        by_worker.setdefault(u.worker, []).append(u)
    firsts, later = [], []
    for scored in by_worker.values():
        scored.sort(key=lambda u: u.start)
        firsts.append(scored[0])
        later += scored[1:]
    if not later:
        return {"units": 0, "tokens": 0, "seconds": None, "tokens_per_s": None, "scored_s": 0.0}
    t0 = min(u.end for u in firsts)
    seconds = max(u.end for u in later) - t0
    tokens = sum(u.tokens for u in later)
    return {
        "units": len(later),
        "tokens": tokens,
        "seconds": round(seconds, 3),
        "tokens_per_s": round(tokens / seconds, 1) if seconds > 0 else None,
        "scored_s": round(sum(u.end - u.start for u in later), 3),
    }


__all__ = ["ScoredUnit", "steady_window"]
