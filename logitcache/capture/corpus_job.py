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
from logitcache.capture.plan import plan_build
from logitcache.format import Manifest

log = logging.getLogger(__name__)


def build_cache(cfg: CaptureConfig) -> Manifest:
    """Build (or finish building) the cache ``cfg.output.out``; return its final manifest."""
    from logitcache.teachers import load_tokenizer

    t_start = time.perf_counter()
    out = cfg.output
    check_inputs(
        inputs=cfg.corpus, out=out.out, catalog=out.catalog, storage_options=out.storage_options
    )
    tokenizer = load_tokenizer(cfg.teacher_config())
    with cfg.executor() as executor:
        plan = plan_build(cfg, tokenizer, executor.tokenize_map(tokenizer))
        job = WriteJob(
            kind="cache",
            units=plan.units,
            score=cfg.score_stage(),
            tokenizer=tokenizer,
            capture=cfg.capture_section(),
            corpus=plan.corpus_section(cfg.packing),
            extra=dict(cfg.extra),
            codec=cfg.labels.codec,
            out=out.out,
            catalog=out.catalog,
            storage_options=out.storage_options,
            lease=cfg.run.lease(),
            progress=cfg.run.progress,
            log_interval_s=cfg.run.log_interval_s,
            calibration_tokens=calibration_budget(plan.units),
        )
        return run_write_job(job, executor, t_start=t_start)
