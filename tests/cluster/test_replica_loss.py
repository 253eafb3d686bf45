"""A multi-GPU replica lost with no capacity to restart it: the build finishes on the replica
that remains, every sample once. (Ray Data retries the lost actor's tasks; they do not wait for
its restart, which can never come here.)

Its own cluster (head + two nodes of 4 declared GPUs), since a node is removed for good.
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter

import pytest
from config_sections import capture_config

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

RECORDER = "logitcache.teachers.testing:RecordingTeacher"


@pytest.fixture
def two_gpu_nodes(tmp_path):
    import ray
    from ray.cluster_utils import Cluster

    if ray.is_initialized():
        ray.shutdown()
    cluster = Cluster(
        initialize_head=True,
        head_node_args={"num_cpus": 2, "num_gpus": 0, "object_store_memory": 150 * 2**20},
    )
    nodes = [
        cluster.add_node(num_cpus=2, num_gpus=4, object_store_memory=150 * 2**20) for _ in range(2)
    ]
    cluster.wait_for_nodes()
    records = tmp_path / "records"
    ray.init(
        address=cluster.address,
        logging_level="ERROR",
        log_to_driver=False,
        runtime_env={"env_vars": {"LOGITCACHE_RECORD_TEACHERS": str(records)}},
    )
    try:
        yield cluster, nodes, records
    finally:
        ray.shutdown()
        cluster.shutdown()


@pytest.fixture
def corpus(tmp_path):
    from pydoc_data.topics import topics

    path = tmp_path / "pydoc.jsonl"
    with open(path, "w") as fh:
        for key in sorted(topics):
            for para in topics[key].split("\n\n"):
                if para.strip():
                    fh.write(json.dumps({"text": para}) + "\n")
    return str(path)


def test_lost_replica_without_spare_capacity_finishes_on_the_rest(
    two_gpu_nodes, teacher_dir, corpus, tmp_path
):
    from logitcache.capture import build_cache
    from logitcache.format import open_cache

    cluster, nodes, records = two_gpu_nodes
    out = tmp_path / "cache"
    cfg = capture_config(
        teacher=teacher_dir, corpus=[corpus], out=str(out), backend=RECORDER,
        gpus_per_teacher=4, workers=2, top_k=8, seq_len=64, max_tokens=3000, unit_tokens=200,
        progress="off", codec="lc1", dtype="float32",
    )  # fmt: skip
    result: dict = {}

    def run():
        try:
            result["manifest"] = build_cache(cfg)
        except BaseException as exc:  # surfaced below
            result["error"] = exc

    builder = threading.Thread(target=run)
    builder.start()
    shard_dir = out / "shards"
    removed_at = None
    deadline = time.monotonic() + 240
    while builder.is_alive() and time.monotonic() < deadline:
        written = len(list(shard_dir.glob("*.parquet"))) if shard_dir.is_dir() else 0
        seen = len(list(records.glob("*.json"))) if records.is_dir() else 0
        if written >= 3 and seen >= 2:
            removed_at = written
            cluster.remove_node(nodes[1])  # no replacement: 4 GPUs on one node remain
            break
        time.sleep(0.2)
    builder.join(timeout=300)
    assert not builder.is_alive(), "the build waited for a replica that cannot return"
    assert "error" not in result, result.get("error")
    manifest = result["manifest"]
    assert removed_at is not None and removed_at < len(manifest.shards), "not mid-build"
    assert manifest.status == "complete"
    units = Counter(s.unit for s in manifest.shards)
    assert max(units.values()) == 1
    ids = [s["sample_id"] for s in open_cache(str(out)).iter_samples()]
    assert len(ids) == len(set(ids)) == sum(s.rows for s in manifest.shards)
