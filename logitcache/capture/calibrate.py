"""Tune the codec on the first unit's labels, as the teacher scores them: no extra teacher pass.

lc1 renumbers ids by how often the teacher puts them in its top-k (frequent ids get small
ranks, which delta-code into fewer bytes: about a quarter of the id bytes, docs/benchmarks.md).
The table must be shared by every shard of a cache, so it is fitted once, from the first
positions of the plan's first unit (4,096, or an eighth of a small build), by whichever worker
scores that unit; every encoder waits for it. The manifest records it with the first commit,
and a resumed build reuses the spec in the manifest, so scoring noise (e.g. on a GPU) can never
change the table halfway through a cache. A run stopped before its first commit has no shard
that depends on the table, so its re-run fits it afresh.

Scoring the calibration rows separately, before the pipeline, would load the teacher a second
time on Ray (the pipeline's actors are Ray Data's own) and score those rows twice everywhere.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from logitcache.codecs import Codec, CodecContext, get_codec

log = logging.getLogger(__name__)

CALIBRATION_TOKENS = 4096


def calibration_budget(units: Sequence[Any]) -> int:
    """Positions to fit on: 4096, but at most an eighth of a small build (whose table gains
    little from more)."""
    total = sum(int(u.tokens) for u in units)
    return min(CALIBRATION_TOKENS, max(512, total // 8))


def needs_calibration(codec: Codec) -> bool:
    """A codec with something to fit (it overrides ``calibrate``) and nothing fitted yet."""
    return type(codec).calibrate is not Codec.calibrate and not codec.fitted


def resumes_codec(existing_spec: str, requested: str | None) -> bool:
    """Whether a re-run asks for the cache's own codec (its calibrated table left implicit)."""
    if requested is None:
        return True
    ours, theirs = get_codec(existing_spec), get_codec(requested)
    if ours.name != theirs.name or "ranks=" in requested:
        return False
    return all(ours.params.get(k) == v for k, v in theirs.params.items() if k != "ranks")


@dataclass(frozen=True)
class Calibration:
    """A fit still to make: picklable, so the worker that scores ``unit`` can make it."""

    codec_spec: str  # the requested codec, nothing fitted
    ctx: CodecContext
    unit: str  # the plan's first unit
    max_tokens: int = CALIBRATION_TOKENS

    def fit(self, samples: Sequence[dict[str, Any]]) -> str:
        """The spec fitted on the first ``max_tokens`` positions of ``unit``'s scored rows."""
        rows, total = [], 0
        for sample in samples:
            rows.append(sample)
            total += len(sample["input_ids"])
            if total >= self.max_tokens:
                break
        tuned = get_codec(self.codec_spec).calibrate(rows, self.ctx)
        log.info(
            "codec calibrated on %d positions of unit %s: %s",
            total,
            self.unit,
            tuned.describe().get("ranks_sha256", tuned.name),
        )
        return tuned.spec
