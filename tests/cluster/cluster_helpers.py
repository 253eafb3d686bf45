"""Helpers of the cluster tests: a ``ray.cluster_utils.Cluster`` with declared GPUs, and a
build run in a thread so a test can change the cluster while it runs. A plain module, not a
conftest, so its name cannot collide with another folder's conftest."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

NODE_ARGS = {"num_cpus": 2, "object_store_memory": 150 * 2**20}


@contextmanager
def declared_gpu_cluster(
    *, gpus_per_node: int, tag_nodes: bool = False, records: Path | None = None
) -> Iterator[tuple[Any, list]]:
    """A head without GPUs and two nodes of ``gpus_per_node`` declared GPUs each (resources
    ``gpu_node_0`` / ``gpu_node_1`` too with ``tag_nodes``), this process connected to it;
    yields ``(cluster, nodes)`` and shuts both down after. With ``records``, the
    RecordingTeacher writes how each teacher was started into that folder."""
    import ray
    from ray.cluster_utils import Cluster

    from logitcache.teachers.testing import RECORD_DIR_ENV

    if ray.is_initialized():  # a session-wide local Ray from other tests: not ours to share
        ray.shutdown()
    cluster = Cluster(initialize_head=True, head_node_args={**NODE_ARGS, "num_gpus": 0})
    nodes = [
        cluster.add_node(
            **NODE_ARGS,
            num_gpus=gpus_per_node,
            **({"resources": {f"gpu_node_{i}": 1}} if tag_nodes else {}),
        )
        for i in range(2)
    ]
    cluster.wait_for_nodes()
    # Ray workers inherit the raylets' environment; the recorder's folder comes by runtime env.
    env = {"runtime_env": {"env_vars": {RECORD_DIR_ENV: str(records)}}} if records else {}
    ray.init(address=cluster.address, logging_level="ERROR", log_to_driver=False, **env)
    try:
        yield cluster, nodes
    finally:
        ray.shutdown()
        cluster.shutdown()


def teachers_started(records: Path) -> int:
    """Teachers that have written their RecordingTeacher record (one file per process)."""
    return len(list(records.glob("*.json"))) if records.is_dir() else 0


class BackgroundBuild:
    """``build_cache(cfg)`` in a thread; its error, if any, is raised by :meth:`manifest`."""

    def __init__(self, cfg: Any):
        self.shard_dir = Path(cfg.output.out) / "shards"
        self._result: dict[str, Any] = {}
        self._thread = threading.Thread(target=self._run, args=(cfg,))
        self._thread.start()

    def _run(self, cfg: Any) -> None:
        from logitcache.capture import build_cache

        try:
            self._result["manifest"] = build_cache(cfg)
        except BaseException as exc:  # surfaced by manifest()
            self._result["error"] = exc

    def shards_written(self) -> int:
        """Shard files on disk. (The Ray path commits as results stream back, which may be
        late; the files appear first.)"""
        return len(list(self.shard_dir.glob("*.parquet"))) if self.shard_dir.is_dir() else 0

    def under_way(
        self, *, min_shards: int = 3, ready: Callable[[], bool] = lambda: True, within_s: float
    ) -> int | None:
        """Once ``min_shards`` shard files exist and ``ready()`` holds: how many there are.
        None if the build ended, or ``within_s`` passed, first."""
        deadline = time.monotonic() + within_s
        while self._thread.is_alive() and time.monotonic() < deadline:
            written = self.shards_written()
            if written >= min_shards and ready():
                return written
            time.sleep(0.2)
        return None

    def manifest(self, *, timeout_s: float, stuck: str) -> Any:
        """The finished build's manifest; ``stuck`` is the failure message if it runs on."""
        self._thread.join(timeout=timeout_s)
        assert not self._thread.is_alive(), stuck
        assert "error" not in self._result, self._result.get("error")
        return self._result["manifest"]


def every_sample_once(manifest: Any, uri: str) -> dict[str, dict]:
    """Assert a complete cache lists every planned unit once and holds every sample once;
    return its samples by id."""
    from logitcache.format import open_cache

    assert manifest.status == "complete"
    assert max(Counter(s.unit for s in manifest.shards).values()) == 1
    ids = [s["sample_id"] for s in open_cache(uri).iter_samples()]
    assert len(ids) == len(set(ids)) == sum(s.rows for s in manifest.shards)
    return {s["sample_id"]: s for s in open_cache(uri).iter_samples()}
