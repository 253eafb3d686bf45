"""A build across a multi-node Ray cluster (``ray.cluster_utils.Cluster``): a head plus two
nodes that declare one GPU each, so the teacher actors are scheduled as GPU actors, one per
node. One GPU node is removed mid-build (a lost spot instance); the build must still finish
with every planned sample exactly once, and equal a local single-process build, codec table
included.
"""

from __future__ import annotations

import numpy as np
import pytest
from cluster_helpers import BackgroundBuild, declared_gpu_cluster, every_sample_once
from config_sections import capture_config

pytestmark = pytest.mark.slow

BUILD = {
    "top_k": 8,
    "seq_len": 64,
    "max_tokens": 4000,
    "unit_tokens": 200,
    "progress": "off",
    "codec": "lc1",  # fitted on the first unit by the actor that scores it (a CodecHolder)
    "dtype": "float32",
}


@pytest.fixture
def two_gpu_nodes():
    with declared_gpu_cluster(gpus_per_node=1, tag_nodes=True) as (cluster, nodes):
        yield cluster, nodes


def _samples(uri):
    from logitcache.format import open_cache

    return {s["sample_id"]: s for s in open_cache(uri).iter_samples()}


def test_build_survives_node_removal_every_sample_once(
    two_gpu_nodes, tiny_llama_dir, corpus, tmp_path
):
    import ray

    from logitcache.capture import build_cache

    cluster, nodes = two_gpu_nodes
    assert ray.cluster_resources().get("GPU") == 2
    out = str(tmp_path / "multinode")
    cfg = capture_config(
        teacher=str(tiny_llama_dir), corpus=[corpus], out=out, workers=2, device="auto", **BUILD
    )
    build = BackgroundBuild(cfg)
    # Remove a GPU node once the build is under way: some shards written, more to go.
    removed_at = build.under_way(within_s=150)
    if removed_at is not None:
        cluster.remove_node(nodes[1])
    manifest = build.manifest(
        timeout_s=180, stuck="build did not finish after the node was removed"
    )
    assert removed_at is not None and removed_at < len(manifest.shards), "removal was not mid-build"
    got = every_sample_once(manifest, out)

    # the same result as one local process
    local_out = str(tmp_path / "local")
    local = build_cache(
        capture_config(
            teacher=str(tiny_llama_dir),
            corpus=[corpus],
            out=local_out,
            use_ray=False,
            device="cpu",
            **BUILD,
        )
    )
    assert sorted(s.unit for s in manifest.shards) == sorted(s.unit for s in local.shards)
    ref = _samples(local_out)
    assert set(got) == set(ref)
    assert manifest.codec["spec"] == local.codec["spec"] and manifest.codec["ranks_listed"] > 0
    off = []
    for sid, s in got.items():
        assert np.array_equal(s["topk_ids"], ref[sid]["topk_ids"])
        off.append(np.abs(s["topk_logprobs"] - ref[sid]["topk_logprobs"]) > 1e-4)
    # lc1 levels: a value within float noise of a level boundary may land one level apart.
    assert np.concatenate([o.ravel() for o in off]).mean() < 0.01
