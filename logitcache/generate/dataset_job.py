"""``generate_dataset``: prompts -> teacher responses + soft labels -> cache, resumably.

Only what is particular to ``generate`` is here: its units are groups of prompts with all
their samples (:mod:`.prompts`), its scorer writes responses before scoring them
(:mod:`.stages`), and its generation parameters join the manifest. The write path is the
shared driver of ``build`` (:mod:`logitcache.capture.driver`): the same lease, codec handling,
exactly-once commits and statistics. Each (prompt, sample index) belongs to exactly one unit
and samples are seeded by (--seed, sample id), so a re-run after an interruption produces
every sample exactly once and equals an uninterrupted run.
"""

from __future__ import annotations

import logging
import time

from logitcache.capture.driver import WriteJob, check_inputs, run_write_job
from logitcache.format import Manifest
from logitcache.generate.config import GenerateConfig
from logitcache.generate.prompts import plan_prompts
from logitcache.generate.stages import GenerateScorer

log = logging.getLogger(__name__)


def generate_dataset(cfg: GenerateConfig) -> Manifest:
    """Generate (or finish generating) the dataset cache ``cfg.output.out``; return its manifest."""
    from logitcache.teachers import load_tokenizer

    t_start = time.perf_counter()
    out = cfg.output
    check_inputs(inputs=cfg.prompts, out=out.out, storage_options=out.storage_options)
    tokenizer = load_tokenizer(cfg.teacher_config())
    plan = plan_prompts(cfg, tokenizer)
    capture = cfg.capture_section()
    job = WriteJob(
        kind="dataset",
        units=plan.units,
        score=cfg.score_stage(GenerateScorer, {"generation": cfg.generation.as_dict()}),
        tokenizer=tokenizer,
        capture=capture,
        corpus=plan.corpus_section(),
        extra={**cfg.extra, "generation": capture["generation"]},
        codec=cfg.labels.codec,
        out=out.out,
        storage_options=out.storage_options,
        lease=cfg.run.lease(),
        progress=cfg.run.progress,
        log_interval_s=cfg.run.log_interval_s,
        new_tokens_per_row=cfg.generation.max_new_tokens,
    )
    with cfg.executor() as executor:
        manifest = run_write_job(job, executor, t_start=t_start)
    if cfg.export_jsonl:
        from logitcache.generate.export import export_jsonl

        export_jsonl(out.out, cfg.export_jsonl, storage_options=out.storage_options)
    return manifest
