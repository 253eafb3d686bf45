"""``build_cache``: read -> tokenize -> teacher top-k -> encode -> commit, resumably.

The driver plans deterministic units, opens the cache (refusing a cache built differently),
removes orphans of an interrupted run, skips committed units, and commits each finished unit
the moment its shard is written. Re-running the same command therefore finishes an interrupted
build, each sample exactly once, and its result equals an uninterrupted run.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from typing import Any

from logitcache.capture.calibrate import calibrate_codec, calibration_budget, calibration_rows
from logitcache.capture.config import CaptureConfig
from logitcache.capture.plan import local_tokenize_map, plan_build
from logitcache.capture.progress import Progress
from logitcache.capture.runners import ensure_ray, ray_tokenize_map, run_local, run_ray
from logitcache.capture.stages import Scorer
from logitcache.catalog.build import open_build_target
from logitcache.catalog.lease import LeaseConfig
from logitcache.codecs import CodecContext, get_codec
from logitcache.format import Manifest, open_cache, read_manifest
from logitcache.storage import Store
from logitcache.teachers.config import check_score_args

log = logging.getLogger(__name__)


def teacher_config(cfg: CaptureConfig):
    from logitcache.teachers import TeacherConfig

    return TeacherConfig(
        teacher=cfg.teacher,
        backend=cfg.backend,
        dtype=cfg.dtype,
        device=cfg.device,
        trust_remote_code=cfg.trust_remote_code,
        revision=cfg.revision,
        max_batch_tokens=max(cfg.batch_tokens, cfg.seq_len),
    )


def _identify(tcfg, teacher=None) -> tuple[dict[str, Any], int]:
    """Teacher identity and logits width, without loading weights when the backend allows."""
    from logitcache import teachers

    if teacher is not None:
        return dict(teacher.identity), int(teacher.vocab_size)
    describe = getattr(teachers, "describe_teacher", None)
    if describe is not None:
        ident = describe(tcfg)
        return dict(ident["identity"]), int(ident["vocab_size"])
    # No cheap path: load once on the CPU just to read identity and logits width.
    cpu = dataclasses.replace(tcfg, device="cpu")
    loaded = teachers.load_teacher(cpu)
    return dict(loaded.identity), int(loaded.vocab_size)


def build_cache(cfg: CaptureConfig) -> Manifest:
    """Build (or finish building) the cache ``cfg.out``; return its final manifest."""
    from logitcache.teachers import load_tokenizer, tokenizer_identity

    t_start = time.perf_counter()
    tcfg = teacher_config(cfg)
    tokenizer = load_tokenizer(tcfg)
    started_ray = False
    if cfg.use_ray:
        started_ray = ensure_ray(cfg.ray_address, cfg.workers)
    try:
        tokenize_map = ray_tokenize_map(tokenizer) if cfg.use_ray else local_tokenize_map(tokenizer)
        plan = plan_build(cfg, tokenizer, tokenize_map)
        scorer = None
        if not cfg.use_ray:
            scorer = Scorer(
                tcfg,
                top_k=cfg.top_k,
                rs_samples=cfg.rs_samples,
                batch_tokens=cfg.batch_tokens,
                threads=cfg.threads,
            )
        identity, vocab_size = _identify(tcfg, scorer.teacher if scorer else None)
        # Fail before the writer creates a manifest: a bad k must leave nothing behind.
        check_score_args(cfg.top_k, cfg.rs_samples, vocab_size)
        ctx = CodecContext(vocab_size=vocab_size, top_k=cfg.top_k, rs_samples=cfg.rs_samples)
        header = Manifest(
            teacher=identity,
            tokenizer=tokenizer_identity(tokenizer, vocab_size),
            capture=cfg.capture_section(),
            codec=get_codec(cfg.codec).describe(),
            corpus=plan.corpus_section(cfg),
            extra=dict(cfg.extra),
        )
        target = open_build_target(
            cfg.out,
            header,
            cfg.storage_options,
            catalog=cfg.catalog,
            lease=LeaseConfig(ttl_s=cfg.lease_ttl, wait_s=cfg.wait_lease),
        )
        if target.reuse_complete:
            log.info("%s already holds this cache, complete: nothing to compute", target.uri)
            return open_cache(target.uri, cfg.storage_options).manifest
        with target:
            existing = read_manifest(Store.open(target.uri, cfg.storage_options))
            if existing is not None and _resumes_codec(existing.codec["spec"], cfg.codec):
                header.codec = existing.codec  # resume: the exact (calibrated) codec of the cache
            elif existing is None and "ranks=" not in (cfg.codec or ""):
                header.codec = calibrate_codec(
                    get_codec(cfg.codec),
                    calibration_rows(plan.units, calibration_budget(plan.units)),
                    ctx,
                    scorer=scorer,
                    teacher_config=tcfg,
                    batch_tokens=cfg.batch_tokens,
                    device=cfg.device,
                    workers=cfg.workers,
                    threads=cfg.threads,
                ).describe()
            writer = target.open_writer(header)  # leased; a crashed run's orphans removed
            codec = get_codec(writer.manifest.codec["spec"])
            manifest = _run_units(cfg, tcfg, plan, writer, scorer, codec, ctx, t_start)
            target.finish(manifest)
    finally:
        if started_ray:
            import ray

            ray.shutdown()
    _log_summary(manifest, writer.store.uri)
    return manifest


def _run_units(cfg, tcfg, plan, writer, scorer, codec, ctx, t_start: float) -> Manifest:
    """Compute the units the cache lacks, committing each as it arrives; finish the cache."""
    done = writer.committed_units
    todo = [u for u in plan.units if u.name not in done]
    if len(todo) < len(plan.units):
        log.info("skipping %d committed unit(s); %d to go", len(plan.units) - len(todo), len(todo))
    progress = Progress(
        total_tokens=sum(u.tokens for u in todo),
        total_units=len(todo),
        mode=cfg.progress,
        interval_s=cfg.log_interval_s,
    )
    if cfg.use_ray:
        results = run_ray(
            todo,
            teacher_config=tcfg,
            top_k=cfg.top_k,
            rs_samples=cfg.rs_samples,
            batch_tokens=cfg.batch_tokens,
            workers=cfg.workers,
            device=cfg.device,
            threads=cfg.threads,
            store=writer.store,
            codec_spec=codec.spec,
            ctx=ctx,
        )
    else:
        results = run_local(todo, scorer=scorer, store=writer.store, codec_spec=codec.spec, ctx=ctx)
    per_worker: dict[str, dict[str, float]] = {}
    ready_at: list[float] = []
    last_commit = 0.0
    try:
        for info, meta in results:
            writer.commit([info])
            ready_at.append(meta["ready_at"])
            last_commit = time.time()
            progress.update(tokens=info.tokens, rows=info.rows, nbytes=info.bytes)
            w = per_worker.setdefault(meta["worker"], {"tokens": 0, "teacher_s": 0.0, "units": 0})
            w["tokens"] += info.tokens
            w["teacher_s"] += meta["teacher_s"]
            w["units"] += 1
    finally:
        progress.close()
    # Pipeline time: from the first teacher being ready to the last commit, i.e. scoring,
    # encoding, writing and committing, without Ray start-up and teacher loading.
    pipeline_s = last_commit - min(ready_at) if ready_at else None
    stats = _run_stats(
        cfg, progress, per_worker, time.perf_counter() - t_start, len(plan.units) - len(todo)
    )
    stats["run"]["pipeline_s"] = round(pipeline_s, 3) if pipeline_s else None
    stats["run"]["pipeline_tokens_per_s"] = (
        round(progress.tokens / pipeline_s, 1) if pipeline_s else None
    )
    return writer.finish(stats)


def _resumes_codec(existing_spec: str, requested: str | None) -> bool:
    """Whether a re-run asks for the cache's own codec (its calibrated table left implicit)."""
    if requested is None:
        return True
    ours, theirs = get_codec(existing_spec), get_codec(requested)
    if ours.name != theirs.name or "ranks=" in requested:
        return False
    return all(ours.params.get(k) == v for k, v in theirs.params.items() if k != "ranks")


def _run_stats(cfg, progress: Progress, per_worker, wall_s: float, skipped: int) -> dict[str, Any]:
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
            "tokens_per_s": round(progress.tokens / wall_s, 1) if wall_s else None,
            "capture_tokens_per_s": round(progress.tokens / capture_s, 1) if capture_s else None,
            "first_commit_s": (
                round(progress.first_commit - progress.start, 3) if progress.first_commit else None
            ),
            "workers": cfg.workers,
            "ray": cfg.use_ray,
            "pid": os.getpid(),
        },
        "workers": workers,
    }


def _log_summary(m: Manifest, uri: str) -> None:
    run = m.stats.get("run", {})
    log.info(
        "cache %s complete: %d sequences, %d tokens, %.1f bytes/token; this run: %d tokens in "
        "%.1f s (%.0f tok/s overall%s)",
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
