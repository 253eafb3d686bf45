"""Teacher replicas that span several GPUs: their shape, their placement groups, and the check
that the cluster can hold one before any work starts.

A replica is ``pipeline_parallel`` stages of ``gpus_per_teacher`` GPUs (tensor parallel within
a stage); ``--workers`` counts replicas. Each replica gets a Ray placement group of its own,
created when Ray Data starts its actor (``map_batches(ray_remote_args_fn=...)``, the way Ray
Data's own LLM processors place vLLM engines) and removed when the run ends:

- **transformers** runs the replica in one process: one bundle ``{CPU: 1, GPU: N*M}`` (always on
  one node), the actor takes all of it, and the model is spread over its GPUs with
  ``device_map="auto"``. A transformers replica cannot span nodes.
- **vLLM** starts its own Ray workers, one per GPU: bundles ``{CPU: 1, GPU: 1}`` +
  ``{GPU: 1} x (N*M - 1)``, ``STRICT_PACK`` (all tensor-parallel bundles on one node) when
  ``M == 1``, else ``PACK`` (stages may land on other nodes). The engine actor takes only the
  first bundle's CPU; vLLM's Ray executor finds the placement group it runs in
  (``placement_group_capture_child_tasks``) and schedules its GPU workers into the bundles.

A single-GPU replica keeps the plain ``num_gpus=1`` actor (no placement group).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from logitcache.errors import ConfigError
from logitcache.teachers.config import IN_PROCESS, RAY_WORKERS

log = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class ReplicaSpec:
    """One teacher replica's shape: ``pipeline_parallel`` stages x ``gpus_per_teacher`` GPUs."""

    gpus_per_teacher: int = 1
    pipeline_parallel: int = 1
    layout: str = IN_PROCESS

    def __post_init__(self) -> None:
        for name in ("gpus_per_teacher", "pipeline_parallel"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                flag = "--" + name.replace("_", "-")
                raise ConfigError(f"{flag} {value!r}: must be an integer >= 1")
        if self.layout not in (IN_PROCESS, RAY_WORKERS):
            raise ConfigError(f"unknown replica layout {self.layout!r}")

    @property
    def gpus(self) -> int:
        return self.gpus_per_teacher * self.pipeline_parallel

    @property
    def multi_gpu(self) -> bool:
        return self.gpus > 1

    def bundles(self) -> list[dict[str, float]]:
        """The placement group bundles of one replica (see the module docstring)."""
        if self.layout == IN_PROCESS:
            return [{"CPU": 1, "GPU": self.gpus}]
        return [{"CPU": 1, "GPU": 1}] + [{"GPU": 1} for _ in range(self.gpus - 1)]

    @property
    def strategy(self) -> str:
        return (
            "PACK" if self.layout == RAY_WORKERS and self.pipeline_parallel > 1 else "STRICT_PACK"
        )

    def actor_resources(self) -> dict[str, Any]:
        """``map_batches`` resources of the replica's actor inside its placement group."""
        if self.layout == IN_PROCESS:
            return {"num_cpus": 1, "num_gpus": self.gpus}
        return {"num_cpus": 1, "num_gpus": 0}

    def describe(self) -> str:
        if self.pipeline_parallel == 1:
            return f"{self.gpus_per_teacher} GPU(s) on one node"
        return (
            f"{self.pipeline_parallel} pipeline stage(s) x {self.gpus_per_teacher} GPU(s) "
            f"= {self.gpus} GPUs"
        )


def replica_spec(teacher: Any) -> ReplicaSpec:
    """The replica shape of a write config's teacher section (``--gpus-per-teacher``,
    ``--pipeline-parallel``, and how ``--backend`` runs several GPUs)."""
    from logitcache.teachers import replica_layout

    spec = ReplicaSpec(
        gpus_per_teacher=teacher.gpus_per_teacher, pipeline_parallel=teacher.pipeline_parallel
    )
    if not spec.multi_gpu:
        return spec
    return ReplicaSpec(
        gpus_per_teacher=teacher.gpus_per_teacher,
        pipeline_parallel=teacher.pipeline_parallel,
        layout=replica_layout(teacher.backend),
    )


def node_gpus(nodes: list[dict[str, Any]]) -> list[tuple[str, int]]:
    """``(node address, declared GPUs)`` of every alive node of ``ray.nodes()``."""
    out = []
    for node in nodes:
        if node.get("Alive", node.get("alive", True)):
            gpus = int(node.get("Resources", {}).get("GPU", 0))
            out.append((str(node.get("NodeManagerAddress", node.get("NodeID", "?"))), gpus))
    return out


def check_fits(replica: ReplicaSpec, workers: int, nodes: list[tuple[str, int]]) -> None:
    """Refuse, before any work, a replica that no node or the whole cluster cannot hold,
    naming the GPUs that exist. More replicas than fit at once only wait (an autoscaler may
    add nodes), so they are logged, not refused."""
    have = ", ".join(f"{addr}: {g} GPU" for addr, g in nodes) or "no nodes"
    largest = max((g for _, g in nodes), default=0)
    total = sum(g for _, g in nodes)
    if total == 0:
        raise ConfigError(
            f"a teacher replica of {replica.describe()} needs GPUs, but the Ray cluster has "
            f"none ({have}); drop --gpus-per-teacher/--pipeline-parallel to run on CPUs."
        )
    if replica.gpus > total:
        raise ConfigError(
            f"a teacher replica of {replica.describe()} needs {replica.gpus} GPUs, more than "
            f"the whole Ray cluster has ({total}: {have}); lower --gpus-per-teacher or "
            "--pipeline-parallel, or add nodes."
        )
    # One stage's tensor-parallel GPUs, and an in-process replica's all, share one node.
    per_node = replica.gpus if replica.layout == IN_PROCESS else replica.gpus_per_teacher
    if per_node > largest:
        how = (
            "a transformers replica runs in one process on one node"
            if replica.layout == IN_PROCESS
            else "tensor-parallel GPUs share one node"
        )
        raise ConfigError(
            f"a teacher replica of {replica.describe()} needs {per_node} GPUs on one node "
            f"({how}), but the largest node has {largest} ({have}); lower --gpus-per-teacher"
            + (
                ", or use --backend vllm with --pipeline-parallel to span nodes."
                if replica.layout == IN_PROCESS
                else " or raise --pipeline-parallel."
            )
        )
    fits = sum(g // per_node for _, g in nodes) // replica.pipeline_parallel
    if workers > max(fits, 1):
        log.warning(
            "%d teacher replicas of %s requested but the cluster holds %d at once (%s); the "
            "rest start when GPUs free up or nodes join",
            workers,
            replica.describe(),
            fits,
            have,
        )


@dataclass
class ReplicaPlacer:
    """``ray_remote_args_fn`` for Ray Data: a fresh placement group per replica actor.

    Called on the driver each time Ray Data starts (or restarts) a teacher actor; the groups
    are removed by :meth:`release` when the run ends, so GPUs are never held past a build."""

    replica: ReplicaSpec
    groups: list[Any] = field(default_factory=list)

    def __call__(self) -> dict[str, Any]:
        import ray
        from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

        pg = ray.util.placement_group(
            self.replica.bundles(),
            strategy=self.replica.strategy,
            name=f"logitcache-teacher-{len(self.groups)}",
        )
        self.groups.append(pg)
        return {
            "scheduling_strategy": PlacementGroupSchedulingStrategy(
                pg, placement_group_capture_child_tasks=True
            )
        }

    def release(self) -> None:
        import ray

        for pg in self.groups:
            try:
                ray.util.remove_placement_group(pg)
            except (ValueError, RuntimeError, ray.exceptions.RayError) as exc:
                log.debug("placement group already gone: %s", exc)  # e.g. Ray shut down
        self.groups.clear()
