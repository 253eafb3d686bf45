"""Tune the codec on a first sample of the teacher's output, before the first shard exists.

lc1 renumbers ids by how often the teacher puts them in its top-k (frequent ids get small
ranks, which delta-code into fewer bytes: about a quarter of the id bytes, docs/benchmarks.md).
The table must be fixed before the first shard is written and shared by every writer, so it
is fitted once, by the driver under the write lease, from the first few thousand positions of
the plan, and recorded in the manifest's codec spec. A resumed build reuses the spec in the
manifest, so scoring noise (e.g. on a GPU) can never change the table halfway through a cache.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

from logitcache.codecs import Codec, CodecContext, get_codec

log = logging.getLogger(__name__)

CALIBRATION_TOKENS = 4096


def calibration_rows(units: Sequence[Any], max_tokens: int = CALIBRATION_TOKENS) -> list[dict]:
    """The first rows of the plan, up to ``max_tokens`` positions (deterministic)."""
    from logitcache.capture.executors import unit_rows

    rows: list[dict] = []
    total = 0
    for unit in units:
        for row in unit_rows(unit):
            rows.append(row)
            total += len(row["input_ids"])
            if total >= max_tokens:
                return rows
    return rows


def calibration_budget(units: Sequence[Any]) -> int:
    """Positions to score for calibration: 4096, but at most an eighth of a small build, whose
    teacher time it would otherwise dominate (a small cache gains little from the table)."""
    total = sum(int(u.tokens) for u in units)
    return min(CALIBRATION_TOKENS, max(512, total // 8))


def needs_calibration(codec: Codec) -> bool:
    return type(codec).calibrate is not Codec.calibrate


def resumes_codec(existing_spec: str, requested: str | None) -> bool:
    """Whether a re-run asks for the cache's own codec (its calibrated table left implicit)."""
    if requested is None:
        return True
    ours, theirs = get_codec(existing_spec), get_codec(requested)
    if ours.name != theirs.name or "ranks=" in requested:
        return False
    return all(ours.params.get(k) == v for k, v in theirs.params.items() if k != "ranks")


def calibrate_codec(
    codec: Codec,
    rows: list[dict],
    ctx: CodecContext,
    score: Callable[[list[dict]], list[dict]],
) -> Codec:
    """``codec.calibrate`` on the teacher's labels of ``rows``; ``score`` runs the teacher
    (an executor's :meth:`~logitcache.capture.executors.Executor.calibrate`)."""
    if not needs_calibration(codec) or not rows:
        return codec
    tuned = codec.calibrate(score(rows), ctx)
    log.info(
        "codec calibrated on %d positions: %s",
        sum(len(r["input_ids"]) for r in rows),
        tuned.describe().get("ranks_sha256", tuned.name),
    )
    return tuned
