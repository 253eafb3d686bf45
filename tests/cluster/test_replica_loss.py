"""A multi-GPU replica lost with no capacity to restart it: the build finishes on the replica
that remains, every sample once. (Ray Data retries the lost actor's tasks; they do not wait for
its restart, which can never come here.)

Its own cluster (head + two nodes of 4 declared GPUs), since a node is removed for good.
"""

from __future__ import annotations

import pytest
from cluster_helpers import (
    BackgroundBuild,
    declared_gpu_cluster,
    every_sample_once,
    teachers_started,
)
from config_sections import capture_config

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

RECORDER = "logitcache.teachers.testing:RecordingTeacher"


@pytest.fixture
def two_gpu_nodes(tmp_path):
    records = tmp_path / "records"
    with declared_gpu_cluster(gpus_per_node=4, records=records) as (cluster, nodes):
        yield cluster, nodes, records


def test_lost_replica_without_spare_capacity_finishes_on_the_rest(
    two_gpu_nodes, teacher_dir, corpus, tmp_path
):

    cluster, nodes, records = two_gpu_nodes
    out = tmp_path / "cache"
    cfg = capture_config(
        teacher=teacher_dir, corpus=[corpus], out=str(out), backend=RECORDER,
        gpus_per_teacher=4, workers=2, top_k=8, seq_len=64, max_tokens=3000, unit_tokens=200,
        progress="off", codec="lc1", dtype="float32",
    )  # fmt: skip
    build = BackgroundBuild(cfg)
    removed_at = build.under_way(ready=lambda: teachers_started(records) >= 2, within_s=240)
    if removed_at is not None:
        cluster.remove_node(nodes[1])  # no replacement: 4 GPUs on one node remain
    manifest = build.manifest(
        timeout_s=300, stuck="the build waited for a replica that cannot return"
    )
    assert removed_at is not None and removed_at < len(manifest.shards), "not mid-build"
    every_sample_once(manifest, str(out))
