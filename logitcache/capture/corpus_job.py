"""``build_cache``: a corpus -> a cache of the teacher's soft labels, resumably.

This module holds only what is particular to ``build``: planning the corpus into units
(:mod:`logitcache.capture.plan`) and describing the job. The write path -- lease, codec,
skipping committed units, commits, progress, statistics -- is the shared driver
(:mod:`logitcache.capture.driver`); where stages run is the executor's business.
"""

from __future__ import annotations

import logging
import time

from logitcache.capture.calibrate import calibration_budget
from logitcache.capture.config import CaptureConfig
from logitcache.capture.driver import WriteJob, check_inputs, run_write_job
from logitcache.capture.executors import make_executor
from logitcache.capture.placement import replica_spec
from logitcache.capture.plan import plan_build
from logitcache.capture.stages import ScoreStage
from logitcache.format import Manifest
from logitcache.format.lease import LeaseConfig

log = logging.getLogger(__name__)


def teacher_config(cfg):
    """The :class:`~logitcache.teachers.TeacherConfig` of a build or generate config."""
    from logitcache.teachers import TeacherConfig

    return TeacherConfig(
        teacher=cfg.teacher,
        backend=cfg.backend,
        dtype=cfg.dtype,
        device=cfg.device,
        trust_remote_code=cfg.trust_remote_code,
        revision=cfg.revision,
        max_batch_tokens=max(cfg.batch_tokens, cfg.seq_len),
        tensor_parallel=cfg.gpus_per_teacher,
        pipeline_parallel=cfg.pipeline_parallel,
    )


def build_cache(cfg: CaptureConfig) -> Manifest:
    """Build (or finish building) the cache ``cfg.out``; return its final manifest."""
    from logitcache.teachers import load_tokenizer

    t_start = time.perf_counter()
    check_inputs(
        inputs=cfg.corpus, out=cfg.out, catalog=cfg.catalog, storage_options=cfg.storage_options
    )
    tcfg = teacher_config(cfg)
    tokenizer = load_tokenizer(tcfg)
    executor = make_executor(
        use_ray=cfg.use_ray,
        workers=cfg.workers,
        device=cfg.device,
        threads=cfg.threads,
        ray_address=cfg.ray_address,
        replica=replica_spec(cfg),
    )
    with executor:
        plan = plan_build(cfg, tokenizer, executor.tokenize_map(tokenizer))
        job = WriteJob(
            kind="cache",
            units=plan.units,
            score=ScoreStage(
                teacher=tcfg,
                top_k=cfg.top_k,
                rs_samples=cfg.rs_samples,
                batch_tokens=cfg.batch_tokens,
                threads=cfg.threads,
            ),
            tokenizer=tokenizer,
            capture=cfg.capture_section(),
            corpus=plan.corpus_section(cfg),
            extra=dict(cfg.extra),
            codec=cfg.codec,
            out=cfg.out,
            catalog=cfg.catalog,
            storage_options=cfg.storage_options,
            lease=LeaseConfig(ttl_s=cfg.lease_ttl, wait_s=cfg.wait_lease),
            progress=cfg.progress,
            log_interval_s=cfg.log_interval_s,
            calibration_tokens=calibration_budget(plan.units),
        )
        return run_write_job(job, executor, t_start=t_start)
