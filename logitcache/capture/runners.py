"""Scheduling of the capture stages: in-process (``--no-ray``) or as a Ray Data pipeline.

Both runners take the planned units and yield ``(ShardInfo, meta)`` as each unit's shard is
written; the driver commits it at once, so a crash keeps everything committed so far. They
differ only in where the stages of :mod:`logitcache.capture.stages` run:

- local: one loop, teacher and encoder in this process (simple, no overlap).
- Ray: ``from_items(units) -> map_batches(TeacherActor, N actors, num_gpus=1 | num_cpus=1)
  -> map_batches(write, CPU tasks)``, streamed back with ``iter_rows``; Ray Data overlaps the
  encoder tasks with the teacher actors, and each actor loads the teacher once.
"""

from __future__ import annotations

import json
import logging
import os
from collections import deque
from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np

from logitcache.capture.stages import Scorer, tokenize_blob, write_blob, write_unit
from logitcache.capture.transport import pack_rows
from logitcache.codecs import CodecContext
from logitcache.corpus import Unit
from logitcache.format import ShardInfo
from logitcache.storage import Store

log = logging.getLogger(__name__)
ACTOR_START_TIMEOUT_S = 1800


def unit_rows(unit: Unit) -> list[dict[str, Any]]:
    return [
        {"sample_id": r.sample_id, "input_ids": r.input_ids, "loss_mask": r.loss_mask}
        for r in unit.rows
    ]


# -- local -------------------------------------------------------------------------------------
def run_local(
    units: Iterable[Unit], *, scorer: Scorer, store: Store, codec_spec: str, ctx: CodecContext
) -> Iterator[tuple[ShardInfo, dict[str, Any]]]:
    for unit in units:
        before = scorer.busy_s
        samples = scorer.score_rows(unit_rows(unit))
        info = write_unit(store, unit.name, samples, codec_spec, ctx)
        yield (
            info,
            {
                "worker": f"local-{os.getpid()}",
                "teacher_s": scorer.busy_s - before,
                "ready_at": scorer.ready_at,
            },
        )


# -- Ray ---------------------------------------------------------------------------------------
def ensure_ray(address: str | None, workers: int) -> bool:
    """Connect to ``address`` (or RAY_ADDRESS), else start a quiet local Ray; True if we started it."""
    import ray

    if ray.is_initialized():
        return False
    os.environ.setdefault("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")
    if address or os.environ.get("RAY_ADDRESS"):
        ray.init(address=address, logging_level=logging.WARNING)
        log.info("connected to Ray cluster at %s", address or os.environ["RAY_ADDRESS"])
        return True
    # Logical CPUs: one per teacher actor plus room for tokenize/encode tasks. Torch threads
    # are set by the actor itself, so this does not oversubscribe cores.
    num_cpus = max(os.cpu_count() or 1, workers + 2)
    ray.init(
        address="local",  # a fresh runtime, even if `ray start` left one on this machine
        num_cpus=num_cpus,
        include_dashboard=False,
        logging_level=logging.WARNING,
        log_to_driver=False,
        configure_logging=False,
    )
    log.info("started a local Ray runtime (%d logical CPUs)", num_cpus)
    return True


def ray_tokenize_map(tokenizer, max_in_flight: int = 4):
    """Ordered tokenisation in Ray CPU tasks, at most ``max_in_flight`` chunks ahead."""
    import ray

    task = ray.remote(num_cpus=1)(tokenize_blob)
    tok_ref = ray.put(tokenizer)

    def run(jobs: Iterable[str]) -> Iterator[bytes]:
        pending: deque = deque()
        for job in jobs:
            pending.append(task.remote(tok_ref, job))
            if len(pending) >= max_in_flight:
                yield ray.get(pending.popleft())
        while pending:
            yield ray.get(pending.popleft())

    return run


class TeacherActor:
    """Ray Data callable class: loads the teacher once, scores one unit per call."""

    def __init__(self, teacher_config, top_k, rs_samples, batch_tokens, threads=None):
        self.scorer = Scorer(
            teacher_config,
            top_k=top_k,
            rs_samples=rs_samples,
            batch_tokens=batch_tokens,
            threads=threads,
        )
        self.worker = f"{os.uname().nodename}-{os.getpid()}"

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, Any]:
        units, blobs, secs = [], [], []
        for unit, blob in zip(batch["unit"], batch["rows"]):
            before = self.scorer.busy_s
            blobs.append(self.scorer.score_blob(bytes(blob)))
            units.append(str(unit))
            secs.append(self.scorer.busy_s - before)
        return {
            "unit": np.array(units),
            "samples": np.array(blobs, dtype=object),
            "teacher_s": np.array(secs, dtype=np.float64),
            "worker": np.array([self.worker] * len(units)),
            "ready_at": np.array([self.scorer.ready_at] * len(units), dtype=np.float64),
        }


def _write_batch(batch: dict[str, np.ndarray], *, store, codec_spec, ctx) -> dict[str, Any]:
    shards = [
        write_blob(store, str(u), bytes(b), codec_spec, ctx)
        for u, b in zip(batch["unit"], batch["samples"])
    ]
    return {
        "shard": np.array(shards),
        "teacher_s": batch["teacher_s"],
        "worker": batch["worker"],
        "ready_at": batch["ready_at"],
    }


def teacher_resources(
    device: str, workers: int, threads: int | None
) -> tuple[dict[str, Any], int | None]:
    """Ray resources of one teacher worker and its torch thread count.

    One GPU each when the cluster has GPUs (and the device allows), else one CPU each.
    """
    import ray

    gpus = ray.cluster_resources().get("GPU", 0) if device != "cpu" else 0
    if gpus >= 1:
        return {"num_gpus": 1}, threads
    # Ray pins OMP threads to num_cpus=1; give each CPU actor its share of the cores.
    return {"num_cpus": 1}, threads or max(1, (os.cpu_count() or 1) // workers)


def run_ray(
    units: list[Unit],
    *,
    teacher_config,
    top_k: int,
    rs_samples: int,
    batch_tokens: int,
    workers: int,
    device: str,
    threads: int | None,
    store: Store,
    codec_spec: str,
    ctx: CodecContext,
    actor: type | None = None,
    actor_kwargs: dict[str, Any] | None = None,
) -> Iterator[tuple[ShardInfo, dict[str, Any]]]:
    """Score (``actor``: :class:`TeacherActor` by default; a subclass may e.g. generate first,
    taking ``actor_kwargs``) and write every unit on Ray; yields committed-ready shards."""
    import ray
    import ray.data

    if not units:
        return
    data_ctx = ray.data.DataContext.get_current()
    data_ctx.enable_progress_bars = False  # our own bar/log lines report progress
    data_ctx.execution_options.preserve_order = False  # commit in completion order
    # Start scoring once every teacher actor has loaded, so work spreads over all of them; a
    # cluster that cannot host the actors fails after this long instead of waiting forever.
    data_ctx.wait_for_min_actors_s = ACTOR_START_TIMEOUT_S
    resources, threads_per_actor = teacher_resources(device, workers, threads)
    items = [{"unit": u.name, "rows": pack_rows(unit_rows(u))} for u in units]
    ds = ray.data.from_items(items, override_num_blocks=len(items))
    ds = ds.map_batches(
        actor or TeacherActor,
        fn_constructor_kwargs={
            "teacher_config": teacher_config,
            "top_k": top_k,
            "rs_samples": rs_samples,
            "batch_tokens": batch_tokens,
            "threads": threads_per_actor,
            **(actor_kwargs or {}),
        },
        batch_size=1,
        batch_format="numpy",
        # Two units queued per actor: the next unit is at hand when one ends, and no actor
        # hoards the queue while others idle.
        compute=ray.data.ActorPoolStrategy(size=workers, max_tasks_in_flight_per_actor=2),
        **resources,
    )
    ds = ds.map_batches(
        _write_batch,
        fn_kwargs={"store": store, "codec_spec": codec_spec, "ctx": ctx},
        batch_size=1,
        batch_format="numpy",
        num_cpus=1,
    )
    log.info(
        "Ray pipeline: %d unit(s) over %d teacher actor(s) (%s each)",
        len(units),
        workers,
        resources,
    )
    for row in ds.iter_rows():
        d = json.loads(row["shard"])
        meta = {
            "worker": str(row["worker"]),
            "teacher_s": float(row["teacher_s"]),
            "ready_at": float(row["ready_at"]),
            "writer_pid": d.pop("pid"),
        }
        yield ShardInfo(**d), meta
