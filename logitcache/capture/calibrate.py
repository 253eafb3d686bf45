"""Tune the codec on a first sample of the teacher's output, before the cache header exists.

lc1 renumbers ids by how often the teacher puts them in its top-k (frequent ids get small
ranks, which delta-code into fewer bytes: about a quarter of the id bytes, docs/benchmarks.md).
The table must be fixed before the first shard is written and shared by every writer, so it
is fitted once, on the driver's request, from the first few thousand positions of the plan,
and recorded in the manifest's codec spec. A resumed build reuses the spec in the manifest,
so scoring noise (e.g. on a GPU) can never change the table halfway through a cache.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from logitcache.codecs import Codec, CodecContext

log = logging.getLogger(__name__)

CALIBRATION_TOKENS = 4096


def calibration_rows(units: Sequence[Any], max_tokens: int = CALIBRATION_TOKENS) -> list[dict]:
    """The first rows of the plan, up to ``max_tokens`` positions (deterministic)."""
    from logitcache.capture.runners import unit_rows

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


def _ids_only(samples: list[dict]) -> list[dict]:
    keep = ("topk_ids", "rs_ids", "rs_counts")
    return [{k: s[k] for k in keep if k in s} for s in samples]


def _score_remote(teacher_config, rows, top_k, rs_samples, batch_tokens, threads) -> list[dict]:
    from logitcache.capture.stages import Scorer

    scorer = Scorer(
        teacher_config,
        top_k=top_k,
        rs_samples=rs_samples,
        batch_tokens=batch_tokens,
        threads=threads,
    )
    return _ids_only(scorer.score_rows(rows))


def calibrate_codec(
    codec: Codec,
    rows: list[dict],
    ctx: CodecContext,
    *,
    scorer=None,
    teacher_config=None,
    batch_tokens: int = 8192,
    device: str = "auto",
    workers: int = 1,
    threads: int | None = None,
) -> Codec:
    """Score ``rows`` with the teacher (here, or in one Ray task on a teacher worker's
    resources) and return ``codec.calibrate(...)`` on the result."""
    if not needs_calibration(codec) or not rows:
        return codec
    if scorer is not None:
        samples = _ids_only(scorer.score_rows(rows))
    else:
        import ray

        from logitcache.capture.runners import teacher_resources

        resources, threads_per_task = teacher_resources(device, workers, threads)
        task = ray.remote(_score_remote).options(**resources)
        samples = ray.get(
            task.remote(
                teacher_config, rows, ctx.top_k, ctx.rs_samples, batch_tokens, threads_per_task
            )
        )
    tuned = codec.calibrate(samples, ctx)
    log.info(
        "codec calibrated on %d positions: %s",
        sum(len(r["input_ids"]) for r in rows),
        tuned.describe().get("ranks_sha256", tuned.name),
    )
    return tuned
