"""Teacher replicas of several GPUs on ``ray.cluster_utils.Cluster``: 2 nodes x 4 declared GPUs
(``num_gpus`` is only a declared resource here; the teacher runs on the CPU).

- ``--gpus-per-teacher 4 --workers 2``: two replicas, each in its own placement group, each
  seeing 4 distinct GPU ids of one node, each receiving the parallel configuration;
- a replica larger than any node, or than the cluster, is refused before any work;
- a node removed mid-build (and replaced, as a spot node is) leaves every sample exactly once.
"""

from __future__ import annotations

import json

import pytest
from cluster_helpers import (
    NODE_ARGS,
    BackgroundBuild,
    declared_gpu_cluster,
    every_sample_once,
    teachers_started,
)
from config_sections import capture_config

from logitcache.capture.placement import ReplicaSpec, check_fits
from logitcache.errors import ConfigError
from logitcache.teachers import IN_PROCESS, RAY_WORKERS

RECORDER = "logitcache.teachers.testing:RecordingTeacher"
BUILD = {
    "top_k": 8,
    "seq_len": 64,
    "max_tokens": 3000,
    "unit_tokens": 200,
    "progress": "off",
    "codec": "raw",
    "dtype": "float32",
}


# -- shapes and the fit check (no Ray) ---------------------------------------------------------
def test_bundles_pack_tensor_parallel_gpus_on_one_node():
    hf = ReplicaSpec(gpus_per_teacher=4, layout=IN_PROCESS)
    assert hf.bundles() == [{"CPU": 1, "GPU": 4}] and hf.strategy == "STRICT_PACK"
    assert hf.actor_resources() == {"num_cpus": 1, "num_gpus": 4}
    tp = ReplicaSpec(gpus_per_teacher=4, layout=RAY_WORKERS)
    assert tp.bundles() == [{"CPU": 1, "GPU": 1}] + [{"GPU": 1}] * 3
    assert tp.strategy == "STRICT_PACK" and tp.actor_resources()["num_gpus"] == 0
    pp = ReplicaSpec(gpus_per_teacher=4, pipeline_parallel=2, layout=RAY_WORKERS)
    assert len(pp.bundles()) == 8 and pp.strategy == "PACK"
    with pytest.raises(ConfigError, match="--gpus-per-teacher 0"):
        ReplicaSpec(gpus_per_teacher=0)


def test_fit_check_names_the_resources_that_exist():
    nodes = [("10.0.0.1", 4), ("10.0.0.2", 4)]
    check_fits(ReplicaSpec(gpus_per_teacher=4), 2, nodes)
    with pytest.raises(ConfigError, match=r"largest node has 4 \(10.0.0.1: 4 GPU, 10.0.0.2"):
        check_fits(ReplicaSpec(gpus_per_teacher=8, layout=RAY_WORKERS), 1, nodes)
    with pytest.raises(ConfigError, match="more than the whole Ray cluster has \\(8"):
        check_fits(
            ReplicaSpec(gpus_per_teacher=4, pipeline_parallel=3, layout=RAY_WORKERS), 1, nodes
        )
    # vLLM may put pipeline stages on other nodes; a transformers replica is one process
    check_fits(ReplicaSpec(gpus_per_teacher=4, pipeline_parallel=2, layout=RAY_WORKERS), 1, nodes)
    with pytest.raises(ConfigError, match="one process on one node"):
        check_fits(
            ReplicaSpec(gpus_per_teacher=4, pipeline_parallel=2, layout=IN_PROCESS), 1, nodes
        )
    with pytest.raises(ConfigError, match="has none"):
        check_fits(ReplicaSpec(gpus_per_teacher=2), 1, [("10.0.0.1", 0)])


def test_vllm_gets_its_parallel_sizes_and_ray_executor():
    from logitcache.teachers import TeacherConfig
    from logitcache.teachers.vllm_args import engine_kwargs

    cfg = TeacherConfig(teacher="x", backend="vllm", tensor_parallel=4, pipeline_parallel=2)
    kw = engine_kwargs(cfg, "/m", 64)
    assert kw["tensor_parallel_size"] == 4 and kw["pipeline_parallel_size"] == 2
    assert kw["distributed_executor_backend"] == "ray"
    single = engine_kwargs(TeacherConfig(teacher="x", backend="vllm"), "/m", 64)
    assert "tensor_parallel_size" not in single and "distributed_executor_backend" not in single


# -- on a cluster ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def gpu_cluster(tmp_path_factory):
    records = tmp_path_factory.mktemp("teacher-records")
    with declared_gpu_cluster(gpus_per_node=4, records=records) as (cluster, nodes):
        yield cluster, nodes, records


@pytest.mark.slow
def test_too_large_replicas_are_refused_before_any_work(gpu_cluster, teacher_dir, corpus, tmp_path):
    from logitcache.capture import build_cache

    for kw, expect in [
        ({"gpus_per_teacher": 8}, "largest node has 4"),
        ({"gpus_per_teacher": 4, "pipeline_parallel": 3, "backend": "vllm"}, "whole Ray cluster"),
    ]:
        out = tmp_path / f"refused-{kw['gpus_per_teacher']}"
        cfg = capture_config(teacher=teacher_dir, corpus=[corpus], out=str(out), **BUILD, **kw)
        with pytest.raises(ConfigError, match=expect) as info:
            build_cache(cfg)
        assert "4 GPU" in str(info.value)  # names what exists
        assert not out.exists()  # nothing planned, leased or written


@pytest.mark.slow
def test_replicas_own_four_gpus_of_one_node_and_survive_node_removal(
    gpu_cluster, teacher_dir, corpus, tmp_path
):
    import ray

    cluster, nodes, records = gpu_cluster
    out = tmp_path / "cache"
    cfg = capture_config(
        teacher=teacher_dir,
        corpus=[corpus],
        out=str(out),
        backend=RECORDER,
        gpus_per_teacher=4,
        workers=2,
        **BUILD,
    )
    build = BackgroundBuild(cfg)
    removed_at = build.under_way(
        ready=lambda: teachers_started(records) >= 2,
        within_s=240,
    )
    if removed_at is not None:
        # a lost spot node and its replacement: the lost replica's placement group (4 GPUs
        # on one node) can only be rescheduled where 4 GPUs are free, and until it is, the
        # work in flight on that replica waits (Ray Data retries it on the restarted actor)
        cluster.add_node(**NODE_ARGS, num_gpus=4)
        cluster.remove_node(nodes[1])
    manifest = build.manifest(
        timeout_s=300, stuck="build did not finish after the node was removed"
    )
    assert removed_at is not None and removed_at < len(manifest.shards), "not mid-build"

    # two replicas (the first actors started), each: 4 distinct GPU ids, its own node and
    # placement group, and the parallel configuration it was given
    started = [json.loads(p.read_text()) for p in sorted(records.glob("*.json"))]
    first = started[:2]
    for rec in first:
        assert len(set(rec["gpu_ids"])) == 4, rec
        assert sorted(rec["cuda_visible_devices"].split(",")) == sorted(rec["gpu_ids"])
        assert rec["tensor_parallel"] == 4 and rec["pipeline_parallel"] == 1
        assert rec["placement_group"]
    assert len({r["node_id"] for r in first}) == 2
    assert len({r["placement_group"] for r in first}) == 2
    # the groups are released with the run
    table = ray.util.placement_group_table()
    assert all(table[pg]["state"] == "REMOVED" for pg in {r["placement_group"] for r in started})

    every_sample_once(manifest, str(out))


def test_tp8_rayjob_is_sized_to_its_pods():
    """cluster/rayjob-build-tp8.yaml: replicas x GPUs per replica = pods x GPUs per pod, each
    replica fits one pod, and the line is one the build command accepts."""
    import argparse
    import shlex
    from pathlib import Path

    import yaml

    from logitcache.cli.build import add_parser, config_from_args

    path = Path(__file__).resolve().parents[2] / "cluster" / "rayjob-build-tp8.yaml"
    spec = yaml.safe_load(path.read_text())["spec"]
    argv = shlex.split(spec["entrypoint"])[2:]
    parser = argparse.ArgumentParser(prog="build_cache")
    add_parser(parser)
    cfg = config_from_args(parser.parse_args(argv))
    (group,) = spec["rayClusterSpec"]["workerGroupSpecs"]
    per_pod = int(group["rayStartParams"]["num-gpus"])
    (container,) = group["template"]["spec"]["containers"]
    assert int(container["resources"]["limits"]["nvidia.com/gpu"]) == per_pod
    teacher = cfg.teacher
    assert teacher.backend == "vllm" and teacher.gpus_per_teacher == 8 and teacher.device == "cuda"
    replica = teacher.gpus_per_teacher * teacher.pipeline_parallel
    assert cfg.run.workers * replica == group["replicas"] * per_pod
    check_fits(
        ReplicaSpec(gpus_per_teacher=teacher.gpus_per_teacher, layout=RAY_WORKERS),
        cfg.run.workers,
        [(f"pod-{i}", per_pod) for i in range(group["replicas"])],
    )
