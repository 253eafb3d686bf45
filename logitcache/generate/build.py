"""``generate_dataset``: prompts -> teacher responses + soft labels -> cache, resumably.

The driver mirrors ``build_cache``: plan deterministic units (here: groups of prompts with all
their samples), open the cache (refusing one made with other teacher, capture or generation
parameters), remove orphans, skip committed units, and commit each unit as its shard lands.
Each (prompt, sample index) belongs to exactly one unit and a unit commits atomically, so a
re-run after an interruption produces every sample exactly once, and since samples are seeded
by (--seed, sample id), the result equals an uninterrupted run.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from logitcache.capture.calibrate import calibrate_codec, calibration_rows
from logitcache.capture.progress import Progress
from logitcache.capture.runners import ensure_ray, run_local, run_ray
from logitcache.catalog.build import open_build_target
from logitcache.codecs import CodecContext, get_codec
from logitcache.format import Manifest, read_manifest
from logitcache.generate.config import GenerateConfig
from logitcache.generate.prompts import plan_prompts
from logitcache.generate.stages import GenerateActor, GenerateScorer
from logitcache.storage import Store

log = logging.getLogger(__name__)


def teacher_config(cfg: GenerateConfig):
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


def _codec(cfg: GenerateConfig, existing: Manifest | None, units, ctx, scorer, tcfg):
    """The cache's own codec on resume; else the requested one, calibrated on prompt rows
    (cheap: a forward over the first prompts, no generation)."""
    from logitcache.capture.build import _resumes_codec

    if existing is not None and _resumes_codec(existing.codec["spec"], cfg.codec):
        return get_codec(existing.codec["spec"])
    codec = get_codec(cfg.codec)
    if existing is not None or "ranks=" in (cfg.codec or ""):
        return codec
    return calibrate_codec(
        codec,
        calibration_rows(units),
        ctx,
        scorer=scorer.scorer if scorer is not None else None,
        teacher_config=tcfg,
        batch_tokens=cfg.batch_tokens,
        device=cfg.device,
        workers=cfg.workers,
        threads=cfg.threads,
    )


def generate_dataset(cfg: GenerateConfig) -> Manifest:
    """Generate (or finish generating) the dataset cache ``cfg.out``; return its manifest."""
    from logitcache.capture.build import _identify
    from logitcache.teachers import load_tokenizer, tokenizer_identity

    t_start = time.perf_counter()
    tcfg = teacher_config(cfg)
    tokenizer = load_tokenizer(tcfg)
    plan = plan_prompts(cfg, tokenizer)
    started_ray = cfg.use_ray and ensure_ray(cfg.ray_address, cfg.workers)
    target = None
    try:
        scorer = None
        if not cfg.use_ray:
            scorer = GenerateScorer(
                tcfg,
                generation=cfg.generation,
                top_k=cfg.top_k,
                rs_samples=cfg.rs_samples,
                batch_tokens=cfg.batch_tokens,
                threads=cfg.threads,
            )
        identity, vocab_size = _identify(tcfg, scorer.teacher if scorer else None)
        ctx = CodecContext(vocab_size=vocab_size, top_k=cfg.top_k, rs_samples=cfg.rs_samples)
        existing = read_manifest(Store.open(cfg.out, cfg.storage_options))
        codec = _codec(cfg, existing, plan.units, ctx, scorer, tcfg)
        header = Manifest(
            teacher=identity,
            tokenizer=tokenizer_identity(tokenizer, vocab_size),
            capture=cfg.capture_section(),
            codec=codec.describe(),
            corpus=plan.corpus_section(cfg),
            extra={**cfg.extra, "generation": cfg.capture_section()["generation"]},
        )
        # One writer at a time: the cache's write lease, as for `build` (orphan cleanup is
        # only safe under it).
        target = open_build_target(cfg.out, header, cfg.storage_options)
        writer = target.open_writer(header)
        done = writer.committed_units
        todo = [u for u in plan.units if u.name not in done]
        if len(todo) < len(plan.units):
            log.info(
                "skipping %d committed unit(s); %d to go", len(plan.units) - len(todo), len(todo)
            )
        progress = Progress(
            # An upper bound: a response may stop before --max-new-tokens.
            total_tokens=sum(u.tokens + len(u.rows) * cfg.generation.max_new_tokens for u in todo),
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
                actor=GenerateActor,
                actor_kwargs={"generation": cfg.generation.as_dict()},
            )
        else:
            results = run_local(
                todo, scorer=scorer, store=writer.store, codec_spec=codec.spec, ctx=ctx
            )
        teacher_s = 0.0
        try:
            for info, meta in results:
                writer.commit([info])
                teacher_s += meta["teacher_s"]
                progress.update(tokens=info.tokens, rows=info.rows, nbytes=info.bytes)
        finally:
            progress.close()
        manifest = writer.finish(_stats(cfg, progress, plan, len(todo), teacher_s, t_start))
    finally:
        if target is not None:
            target.release()
        if started_ray:
            import ray

            ray.shutdown()
    log.info(
        "dataset %s complete: %d samples, %d tokens (%d this run)",
        writer.store.uri,
        manifest.num_sequences,
        manifest.num_tokens,
        progress.tokens,
    )
    if cfg.export_jsonl:
        from logitcache.generate.export import export_jsonl

        export_jsonl(cfg.out, cfg.export_jsonl, storage_options=cfg.storage_options)
    return manifest


def _stats(cfg, progress: Progress, plan, todo: int, teacher_s: float, t_start: float) -> dict:
    wall = time.perf_counter() - t_start
    run: dict[str, Any] = {
        "units_written": progress.units,
        "units_skipped": len(plan.units) - todo,
        "samples": progress.rows,
        "tokens": progress.tokens,
        "bytes": progress.bytes,
        "wall_s": round(wall, 3),
        "teacher_s": round(teacher_s, 3),
        "tokens_per_s": round(progress.tokens / wall, 1) if wall else None,
        "workers": cfg.workers,
        "ray": cfg.use_ray,
    }
    return {"run": run}
