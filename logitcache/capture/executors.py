"""Executors: where the capture stages run. Chosen once per run; they only schedule.

The driver (:mod:`logitcache.capture.driver`) owns the plan, the lease and the commits. An
executor offers two operations over picklable stage specs
(:class:`~logitcache.capture.stages.ScoreStage`, :class:`~logitcache.capture.stages.WriteStage`):

- :meth:`~Executor.tokenize_map`: documents -> token ids (the plan's heavy part);
- :meth:`~Executor.score_and_write`: score every unit and write its shard, yielding
  ``(ShardInfo, meta)`` as each shard becomes durable (the driver commits it at once). Given a
  :class:`~logitcache.capture.calibrate.Calibration`, the worker that scores the first unit
  fits the codec's table on its labels and every shard is encoded with the fitted codec.

:class:`LocalExecutor` runs them in this process, one after the other (simple, no overlap).
:class:`RayExecutor` runs ``from_items(units) -> map_batches(TeacherActor, N actors,
num_gpus=1 | num_cpus=1) -> map_batches(write, CPU tasks)`` as a Ray Data pipeline, streamed
back with ``iter_rows``; Ray Data overlaps the encoder tasks with the teacher actors and each
actor loads the teacher once. The stage code is the same in both.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import replace
from typing import Any

import numpy as np

from logitcache.capture.calibrate import Calibration
from logitcache.capture.placement import ReplicaPlacer, ReplicaSpec, check_fits, node_gpus
from logitcache.capture.plan import TokenizeMap, local_tokenize_map
from logitcache.capture.stages import Scorer, ScoreStage, WriteStage, tokenize_blob
from logitcache.capture.transport import pack_rows, unpack_rows
from logitcache.corpus import Unit
from logitcache.format import ShardInfo

log = logging.getLogger(__name__)
ACTOR_START_TIMEOUT_S = 1800

Results = Iterator[tuple[ShardInfo, dict[str, Any]]]


def unit_rows(unit: Unit) -> list[dict[str, Any]]:
    return [
        {"sample_id": r.sample_id, "input_ids": r.input_ids, "loss_mask": r.loss_mask}
        for r in unit.rows
    ]


class Executor:
    """Schedules the capture stages. Use as a context manager: it owns its runtime."""

    name = "base"
    uses_ray = False

    def __init__(
        self,
        *,
        workers: int = 1,
        device: str = "auto",
        threads: int | None = None,
        replica: ReplicaSpec | None = None,
    ):
        self.workers = workers
        self.device = device
        self.threads = threads
        self.replica = replica or ReplicaSpec()  # GPUs per teacher replica (capture/placement)

    def __enter__(self) -> Executor:
        return self

    def __exit__(self, *exc: Any) -> None:
        pass

    def tokenize_map(self, tokenizer) -> TokenizeMap:
        raise NotImplementedError

    def identify(self, stage: ScoreStage) -> tuple[dict[str, Any], int]:
        """Teacher identity and logits width, without loading weights where the backend can."""
        from logitcache.teachers import describe_teacher

        ident = describe_teacher(stage.teacher)
        return dict(ident["identity"]), int(ident["vocab_size"])

    def score_and_write(
        self,
        stage: ScoreStage,
        units: Sequence[Unit],
        write: WriteStage,
        calibration: Calibration | None = None,
    ) -> Results:
        """Score and write every unit; each ``meta`` names the ``codec_spec`` its shard was
        encoded with (the fitted one once ``calibration`` has been made)."""
        raise NotImplementedError


class LocalExecutor(Executor):
    """Every stage in this process; the scorer (and its teacher) is loaded once and reused."""

    name = "local"

    def __init__(self, **kwargs: Any):
        super().__init__(**kwargs)
        self._loaded: tuple[ScoreStage, Any] | None = None

    def scorer(self, stage: ScoreStage):
        """The stage's scorer, built on first use and kept (one teacher load per run)."""
        if self._loaded is None or self._loaded[0] != stage:
            self.close_teacher()
            self._loaded = (stage, stage.build())
        return self._loaded[1]

    def close_teacher(self) -> None:
        """Release the loaded teacher through its optional ``close()`` (the vLLM teacher stops
        its engine there), so no engine is left to interpreter exit."""
        loaded, self._loaded = self._loaded, None
        close = getattr(loaded[1].teacher, "close", None) if loaded else None
        if close is not None:
            close()

    def __exit__(self, *exc: Any) -> None:
        self.close_teacher()

    def tokenize_map(self, tokenizer) -> TokenizeMap:
        return local_tokenize_map(tokenizer)

    def identify(self, stage: ScoreStage) -> tuple[dict[str, Any], int]:
        # The teacher is needed here anyway: load it now, read identity from the loaded model.
        teacher = self.scorer(stage).teacher
        return dict(teacher.identity), int(teacher.vocab_size)

    def score_and_write(
        self,
        stage: ScoreStage,
        units: Sequence[Unit],
        write: WriteStage,
        calibration: Calibration | None = None,
    ) -> Results:
        scorer = self.scorer(stage)
        for unit in units:
            before, start = scorer.busy_s, time.time()
            samples = scorer.score_rows(unit_rows(unit))
            end = time.time()
            if calibration is not None and unit.name == calibration.unit:
                write = replace(write, codec_spec=calibration.fit(samples))
            info = write.write(unit.name, samples)
            meta = {
                "worker": f"local-{os.getpid()}",
                "teacher_s": scorer.busy_s - before,
                "ready_at": scorer.ready_at,
                "score_start": start,
                "score_end": end,
                "codec_spec": write.codec_spec,
            }
            yield info, meta


# -- Ray ---------------------------------------------------------------------------------------
class TeacherActor:
    """Ray Data callable class: builds the stage's scorer once, scores one unit per call."""

    def __init__(
        self,
        stage: ScoreStage,
        threads: int | None = None,
        calibration: Calibration | None = None,
        holder: Any = None,
    ):
        self.scorer = stage.build(threads=threads)
        self.worker = f"{os.uname().nodename}-{os.getpid()}"
        self.calibration = calibration
        self.holder = holder  # a CodecHolder actor, when the codec is still to fit

    def _score(self, unit: str, blob: bytes) -> bytes:
        if self.calibration is None or unit != self.calibration.unit:
            return self.scorer.score_blob(blob)
        import ray

        samples = self.scorer.score_rows(unpack_rows(blob))
        ray.get(self.holder.offer.remote(self.calibration.fit(samples)))
        return pack_rows(samples)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, Any]:
        units, blobs, secs, spans = [], [], [], []
        for unit, blob in zip(batch["unit"], batch["rows"]):
            # The span covers the unit's whole turn on this actor (unpack, score, pack): the
            # steady-state window (capture/timing.py) is built from these.
            before, start = self.scorer.busy_s, time.time()
            blobs.append(self._score(str(unit), bytes(blob)))
            spans.append((start, time.time()))
            units.append(str(unit))
            secs.append(self.scorer.busy_s - before)
        return {
            "unit": np.array(units),
            "samples": np.array(blobs, dtype=object),
            "teacher_s": np.array(secs, dtype=np.float64),
            "worker": np.array([self.worker] * len(units)),
            "ready_at": np.array([self.scorer.ready_at] * len(units), dtype=np.float64),
            "score_start": np.array([a for a, _ in spans], dtype=np.float64),
            "score_end": np.array([b for _, b in spans], dtype=np.float64),
        }


# Encode + write tasks run below the teacher's CPU priority. On a CPU-only node the teacher's
# OpenMP threads use every core and wait for each other at each barrier, so an encoder that
# takes one of their cores stalls them all; at nice 10 it runs in the gaps instead. Their own
# runtime env keeps Ray from reusing such a worker process for a teacher actor.
ENCODER_NICE = 10
ENCODER_RUNTIME_ENV = {"env_vars": {"LOGITCACHE_STAGE": "encode"}}


def lower_priority(nice: int = ENCODER_NICE) -> None:
    """Lower this process's CPU priority to ``nice`` (never raises it; a no-op where the OS
    has no such call)."""
    try:
        if os.getpriority(os.PRIO_PROCESS, 0) < nice:
            os.setpriority(os.PRIO_PROCESS, 0, nice)
    except (AttributeError, OSError) as exc:
        log.debug("could not lower the encoder's priority: %s", exc)


class CodecHolder:
    """Ray actor holding the codec fitted on the first unit: set once by the teacher actor that
    scores that unit, awaited by every encoder (and the driver) before encoding a shard."""

    def __init__(self) -> None:
        self._spec: str | None = None
        self._ready = asyncio.Event()

    async def offer(self, spec: str) -> str:
        """The first offer wins (a retried first unit fits again; its fit is not used)."""
        if self._spec is None:
            self._spec = spec
            self._ready.set()
        return self._spec

    async def get(self) -> str:
        await self._ready.wait()
        return self._spec  # type: ignore[return-value]


def _codec_holder() -> Any:
    """A CodecHolder on the driver's node: it lives as long as the run, whichever worker node
    leaves the cluster."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
    return ray.remote(num_cpus=0)(CodecHolder).options(scheduling_strategy=here).remote()


def _write_batch(
    batch: dict[str, np.ndarray], *, write: WriteStage, holder: Any = None
) -> dict[str, Any]:
    lower_priority()
    if holder is not None:  # the codec is fitted on the first unit: wait for it
        import ray

        write = replace(write, codec_spec=ray.get(holder.get.remote()))
    return {
        "shard": np.array(
            [write.write_blob(str(u), bytes(b)) for u, b in zip(batch["unit"], batch["samples"])]
        ),
        "teacher_s": batch["teacher_s"],
        "worker": batch["worker"],
        "ready_at": batch["ready_at"],
        "score_start": batch["score_start"],
        "score_end": batch["score_end"],
    }


class RayExecutor(Executor):
    """The stages on a Ray cluster (``address``, else RAY_ADDRESS, else a local runtime)."""

    name = "ray"
    uses_ray = True

    def __init__(self, *, address: str | None = None, **kwargs: Any):
        super().__init__(**kwargs)
        self.address = address
        self._started = False

    def __enter__(self) -> RayExecutor:
        self._started = ensure_ray(self.address, self.workers)
        if self.replica.multi_gpu:  # before any work: refuse a replica the cluster cannot hold
            import ray

            try:
                check_fits(self.replica, self.workers, node_gpus(ray.nodes()))
            except BaseException:
                self.__exit__(None, None, None)
                raise
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._started:
            import ray

            ray.shutdown()
            self._started = False

    def tokenize_map(self, tokenizer, max_in_flight: int = 4) -> TokenizeMap:
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

    def teacher_resources(self) -> tuple[dict[str, Any], int | None]:
        """Ray resources of one teacher worker and its torch thread count.

        One GPU each when the cluster has GPUs (and the device allows), else one CPU each.
        """
        import ray

        if self.replica.multi_gpu:  # inside the replica's own placement group
            return self.replica.actor_resources(), self.threads
        gpus = ray.cluster_resources().get("GPU", 0) if self.device != "cpu" else 0
        if gpus >= 1:
            return {"num_gpus": 1}, self.threads
        # Ray pins OMP threads to num_cpus=1; give each CPU actor its share of the cores.
        return {"num_cpus": 1}, self.threads or max(1, (os.cpu_count() or 1) // self.workers)

    def score_and_write(
        self,
        stage: ScoreStage,
        units: Sequence[Unit],
        write: WriteStage,
        calibration: Calibration | None = None,
    ) -> Results:
        import ray
        import ray.data

        if not units:
            return
        # A codec still to fit: the actor that scores the first unit fits it and offers it to
        # the holder; encoders wait for it there. No extra teacher load, no extra scoring.
        holder = _codec_holder() if calibration else None
        codec_spec = None if holder is not None else write.codec_spec
        data_ctx = ray.data.DataContext.get_current()
        data_ctx.enable_progress_bars = False  # our own bar/log lines report progress
        data_ctx.execution_options.preserve_order = False  # commit in completion order
        # Start scoring once every teacher actor has loaded, so work spreads over all of them;
        # a cluster that cannot host the actors fails after this long instead of waiting forever.
        data_ctx.wait_for_min_actors_s = ACTOR_START_TIMEOUT_S
        resources, threads = self.teacher_resources()
        placer = ReplicaPlacer(self.replica) if self.replica.multi_gpu else None
        if placer:  # a placement group per replica, made as Ray Data starts each actor
            resources = {**resources, "ray_remote_args_fn": placer}
        items = [{"unit": u.name, "rows": pack_rows(unit_rows(u))} for u in units]
        ds = ray.data.from_items(items, override_num_blocks=len(items))
        ds = ds.map_batches(
            TeacherActor,
            fn_constructor_kwargs={
                "stage": stage,
                "threads": threads,
                "calibration": calibration,
                "holder": holder,
            },
            batch_size=1,
            batch_format="numpy",
            # Two units queued per actor: the next unit is at hand when one ends, and no actor
            # hoards the queue while others idle.
            compute=ray.data.ActorPoolStrategy(size=self.workers, max_tasks_in_flight_per_actor=2),
            **resources,
        )
        ds = ds.map_batches(
            _write_batch,
            fn_kwargs={"write": write, "holder": holder},
            batch_size=1,
            batch_format="numpy",
            num_cpus=1,
            runtime_env=ENCODER_RUNTIME_ENV,
        )
        log.info(
            "Ray pipeline: %d unit(s) over %d teacher actor(s) (%s each)",
            len(units),
            self.workers,
            self.replica.describe() if placer else resources,
        )
        try:
            for row in ds.iter_rows():
                if holder is not None and codec_spec is None:  # set before any shard's encode
                    codec_spec = ray.get(holder.get.remote())
                d = json.loads(row["shard"])
                meta = {
                    "worker": str(row["worker"]),
                    "teacher_s": float(row["teacher_s"]),
                    "ready_at": float(row["ready_at"]),
                    "score_start": float(row["score_start"]),
                    "score_end": float(row["score_end"]),
                    "writer_pid": d.pop("pid"),
                    "codec_spec": codec_spec,
                }
                yield ShardInfo(**d), meta
        finally:
            if placer:
                placer.release()


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


def make_executor(
    *,
    use_ray: bool,
    workers: int = 1,
    device: str = "auto",
    threads: int | None = None,
    ray_address: str | None = None,
    replica: ReplicaSpec | None = None,
) -> Executor:
    """The one place a run chooses between in-process and Ray scheduling."""
    kw = {"workers": workers, "device": device, "threads": threads, "replica": replica}
    if use_ray:
        return RayExecutor(address=ray_address, **kw)
    return LocalExecutor(**kw)


__all__ = [
    "Executor",
    "LocalExecutor",
    "RayExecutor",
    "Scorer",
    "TeacherActor",
    "ensure_ray",
    "make_executor",
    "unit_rows",
]
