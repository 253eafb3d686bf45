"""The one write path of ``build`` and ``generate``: a resumable, leased, exactly-once commit loop.

A caller plans deterministic units and describes its job as a :class:`WriteJob` (the plan, the
scorer's :class:`~logitcache.capture.stages.ScoreStage`, the manifest sections it adds). The
driver then, in this order:

1. identifies the teacher and checks k against its vocabulary -- before anything is written,
   so a bad k leaves no ``building`` manifest behind;
2. takes the cache's write lease (``--out``) or the catalog's decision (``--catalog``);
3. under the lease, reads the existing manifest: a resumed cache keeps its exact codec, a new
   one has its codec fitted on the first unit's labels as they are scored
   (:mod:`logitcache.capture.calibrate`), recorded with the first commit;
4. opens the writer (which removes a crashed run's orphans), skips committed units, and
   commits each unit the moment its shard is durable, with progress and run statistics.

Re-running the same job therefore finishes an interrupted one, each sample exactly once, and
its result equals an uninterrupted run. Where the stages run is the executor's business
(:mod:`logitcache.capture.executors`); the driver never branches on it.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from typing import Any

from logitcache.capture.calibrate import (
    CALIBRATION_TOKENS,
    Calibration,
    needs_calibration,
    resumes_codec,
)
from logitcache.capture.executors import Executor
from logitcache.capture.progress import Progress
from logitcache.capture.stages import ScoreStage, WriteStage
from logitcache.capture.timing import ScoredUnit, steady_window
from logitcache.codecs import Codec, CodecContext, get_codec
from logitcache.corpus import Unit
from logitcache.format import Manifest, open_cache, read_manifest
from logitcache.format.lease import LeaseConfig
from logitcache.format.target import WriteTarget, open_write_target
from logitcache.storage import Store
from logitcache.teachers.config import check_label_counts

log = logging.getLogger(__name__)


@dataclass(kw_only=True)
class WriteJob:
    """Everything the driver needs to write one cache; built by ``build`` or ``generate``."""

    kind: str  # "cache" or "dataset": how logs name the result
    units: list[Unit]
    score: ScoreStage
    tokenizer: Any
    capture: dict[str, Any]  # the manifest sections the job contributes
    corpus: dict[str, Any]
    extra: dict[str, Any] = field(default_factory=dict)
    codec: str | None = None
    out: str | None = None
    catalog: str | None = None
    storage_options: Any = None
    lease: LeaseConfig = field(default_factory=LeaseConfig)
    progress: str = "auto"
    log_interval_s: float = 15.0
    calibration_tokens: int = CALIBRATION_TOKENS
    # Tokens a row may add while it is computed (generate's responses): progress counts them.
    new_tokens_per_row: int = 0


def check_inputs(
    *,
    inputs: list[str],
    out: str | None,
    catalog: str | None = None,
    storage_options: Any = None,
) -> None:
    """Fail fast, before Ray starts or a teacher loads: storage options parse, the inputs
    exist, and the output (or catalog) is reachable with the credentials at hand."""
    from logitcache.corpus import expand_sources
    from logitcache.storage import parse_storage_options
    from logitcache.storage.failures import blame

    parse_storage_options(storage_options)
    with blame(inputs[0] if inputs else "corpus"):
        expand_sources(inputs, storage_options)
    where = catalog or out
    if where:
        with blame(where):
            store = Store.open(where, storage_options)
            if catalog:
                store.exists("index")
            else:
                read_manifest(store)


def run_write_job(job: WriteJob, executor: Executor, *, t_start: float | None = None) -> Manifest:
    """Write (or finish writing) the cache of ``job`` with ``executor``; return its manifest."""
    from logitcache.teachers import tokenizer_identity

    t_start = time.perf_counter() if t_start is None else t_start
    identity, vocab_size = executor.identify(job.score)
    # Fail before the writer creates a manifest: a bad k must leave nothing behind.
    check_label_counts(job.score.top_k, job.score.rs_samples, vocab_size)
    ctx = CodecContext(
        vocab_size=vocab_size, top_k=job.score.top_k, rs_samples=job.score.rs_samples
    )
    header = Manifest(
        teacher=identity,
        tokenizer=tokenizer_identity(job.tokenizer, vocab_size),
        capture=job.capture,
        codec=get_codec(job.codec).describe(),
        corpus=job.corpus,
        extra=dict(job.extra),
    )
    target = open_target(job, header)
    if target.reuse_complete:
        log.info("%s already holds this %s, complete: nothing to compute", target.uri, job.kind)
        return open_cache(target.uri, job.storage_options).manifest
    with target:  # holds the write lease; released on every exit
        existing = read_manifest(Store.open(target.uri, job.storage_options))
        codec, pending = _codec(job, existing)
        header.codec = codec.describe()
        writer = target.open_writer(header)  # leased; a crashed run's orphans removed
        calibration = None
        if pending and job.units:
            calibration = Calibration(
                codec.spec, ctx, unit=job.units[0].name, max_tokens=job.calibration_tokens
            )
        manifest = _commit_units(job, executor, writer, ctx, calibration, t_start)
        target.finish(manifest)
    _log_summary(job.kind, manifest, writer.store.uri)
    return manifest


def open_target(job: WriteJob, header: Manifest) -> WriteTarget:
    """Where the job writes, under the cache's write lease: ``--catalog ROOT`` (reuse, resume
    or extend a shared cache) or a plain ``--out``."""
    if job.catalog:
        from logitcache.catalog import prepare_build

        return prepare_build(job.catalog, header, job.storage_options, lease=job.lease)
    return open_write_target(job.out, header, job.storage_options, lease=job.lease)


def _codec(job: WriteJob, existing: Manifest | None) -> tuple[Codec, bool]:
    """The codec and whether its table is still to fit on the first unit: a resumed cache's
    exact (fitted) codec; a new cache's requested one, to fit unless the spec fixes its table
    (``ranks=``). A cache with no shard yet (stopped before its first commit) fits afresh."""
    fixed = "ranks=" in (job.codec or "")
    if existing is not None and resumes_codec(existing.codec["spec"], job.codec):
        codec = get_codec(existing.codec["spec"])
        return codec, not existing.shards and not fixed and needs_calibration(codec)
    codec = get_codec(job.codec)
    return codec, existing is None and not fixed and needs_calibration(codec)


def _commit_units(
    job: WriteJob,
    executor: Executor,
    writer,
    ctx,
    calibration: Calibration | None,
    t_start: float,
) -> Manifest:
    """Compute the units the cache lacks, committing each as it arrives; finish the cache."""
    done = writer.committed_units
    todo = [u for u in job.units if u.name not in done]
    if len(todo) < len(job.units):
        log.info("skipping %d committed unit(s); %d to go", len(job.units) - len(todo), len(todo))
    progress = Progress(
        # With new tokens per row (responses), an upper bound: a response may stop early.
        total_tokens=sum(u.tokens + len(u.rows) * job.new_tokens_per_row for u in todo),
        total_units=len(todo),
        mode=job.progress,
        interval_s=job.log_interval_s,
    )
    write = WriteStage(writer.store, writer.manifest.codec["spec"], ctx)
    per_worker: dict[str, dict[str, float]] = {}
    ready_at: list[float] = []
    scored: list[ScoredUnit] = []
    last_commit = 0.0
    try:
        for info, meta in executor.score_and_write(job.score, todo, write, calibration):
            if meta["codec_spec"] != writer.manifest.codec["spec"]:
                # The table fitted on the first unit: recorded with the first commit (the
                # writer refuses once a shard with another codec is listed).
                writer.set_codec(get_codec(meta["codec_spec"]).describe())
            writer.commit([info])
            ready_at.append(meta["ready_at"])
            last_commit = time.time()
            scored.append(
                ScoredUnit(
                    worker=meta["worker"],
                    start=meta["score_start"],
                    end=meta["score_end"],
                    tokens=info.tokens,
                )
            )
            progress.update(tokens=info.tokens, rows=info.rows, nbytes=info.bytes)
            w = per_worker.setdefault(meta["worker"], {"tokens": 0, "teacher_s": 0.0, "units": 0})
            w["tokens"] += info.tokens
            w["teacher_s"] += meta["teacher_s"]
            w["units"] += 1
    finally:
        progress.close()
    stats = _run_stats(
        executor, progress, per_worker, time.perf_counter() - t_start, len(job.units) - len(todo)
    )
    # Pipeline time: from the first teacher being ready to the last commit, i.e. scoring,
    # encoding, writing and committing, without Ray start-up and teacher loading.
    pipeline_s = last_commit - min(ready_at) if ready_at else None
    stats["run"]["pipeline_s"] = round(pipeline_s, 3) if pipeline_s else None
    stats["run"]["pipeline_tokens_per_s"] = (
        round(progress.tokens / pipeline_s, 1) if pipeline_s else None
    )
    # Steady state: each worker's units after its first, timed by their scoring intervals.
    stats["run"]["steady"] = steady_window(scored)
    # What the pipeline adds after the last unit is scored (its encode, write and commit).
    stats["run"]["drain_s"] = round(last_commit - max(u.end for u in scored), 3) if scored else None
    return writer.finish(stats)


def _run_stats(
    executor: Executor, progress: Progress, per_worker, wall_s: float, skipped: int
) -> dict[str, Any]:
    capture_s = progress.elapsed
    workers = {
        name: {
            "units": int(w["units"]),
            "tokens": int(w["tokens"]),
            "teacher_s": round(w["teacher_s"], 3),
            "tokens_per_s": round(w["tokens"] / w["teacher_s"], 1) if w["teacher_s"] else None,
        }
        for name, w in sorted(per_worker.items())
    }
    return {
        "run": {
            "units_written": progress.units,
            "units_skipped": skipped,
            "sequences": progress.rows,
            "tokens": progress.tokens,
            "bytes": progress.bytes,
            "wall_s": round(wall_s, 3),
            "capture_s": round(capture_s, 3),
            "teacher_s": round(sum(w["teacher_s"] for w in per_worker.values()), 3),
            "tokens_per_s": round(progress.tokens / wall_s, 1) if wall_s else None,
            "capture_tokens_per_s": round(progress.tokens / capture_s, 1) if capture_s else None,
            "first_commit_s": (
                round(progress.first_commit - progress.start, 3) if progress.first_commit else None
            ),
            "workers": executor.workers,
            "ray": executor.uses_ray,
            "pid": os.getpid(),
        },
        "workers": workers,
    }


def _log_summary(kind: str, m: Manifest, uri: str) -> None:
    run = m.stats.get("run", {})
    log.info(
        "%s %s complete: %d sequences, %d tokens, %.1f bytes/token; this run: %d tokens in "
        "%.1f s (%.0f tok/s overall%s)",
        kind,
        uri,
        m.num_sequences,
        m.num_tokens,
        m.num_bytes / max(m.num_tokens, 1),
        run.get("tokens", 0),
        run.get("wall_s", 0.0),
        run.get("tokens_per_s") or 0.0,
        "".join(
            f"; {name}: {w['tokens_per_s']} tok/s" for name, w in m.stats.get("workers", {}).items()
        ),
    )


__all__ = ["WriteJob", "check_inputs", "open_target", "run_write_job"]
