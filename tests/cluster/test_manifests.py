"""cluster/: every manifest parses, runs a command our CLI accepts, and agrees with itself."""

from __future__ import annotations

import argparse
import re
import shlex
import subprocess
from pathlib import Path

import pytest
import yaml

from logitcache.cli import COMMANDS, build_parser
from logitcache.cli.build import add_parser as add_build_parser

CLUSTER = Path(__file__).resolve().parents[2] / "cluster"
YAMLS = sorted(CLUSTER.glob("*.yaml"))


def load(name: str) -> dict:
    return yaml.safe_load((CLUSTER / name).read_text())


def build_args(argv: list[str]) -> argparse.Namespace:
    """Parse with the very parser pipelines/build_cache.py uses (and `logitcache build`)."""
    parser = argparse.ArgumentParser(prog="build_cache", exit_on_error=False)
    add_build_parser(parser)
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse exits on a missing required option
        raise AssertionError(f"entrypoint args rejected: {argv}") from exc
    # and the CLI command takes the same line
    build_parser({"build": COMMANDS["build"]}).parse_args(["build", *argv])
    return args


def entrypoint_args(entrypoint: str) -> list[str]:
    argv = shlex.split(entrypoint)
    assert argv[:2] == ["python", "pipelines/build_cache.py"], argv[:2]
    assert (CLUSTER.parent / argv[1]).is_file()
    return argv[2:]


def gpus_of(container: dict) -> int:
    limits = container["resources"]["limits"]
    requests = container["resources"].get("requests", {})
    assert str(limits.get("nvidia.com/gpu")) == str(
        requests.get("nvidia.com/gpu", limits.get("nvidia.com/gpu"))
    )
    return int(limits.get("nvidia.com/gpu", 0))


def test_there_are_manifests_and_all_parse():
    names = {p.name for p in YAMLS}
    assert {
        "rayjob-build.yaml",
        "raycluster.yaml",
        "ray-cluster-aws.yaml",
        "runtime_env.yaml",
    } <= names
    for path in YAMLS:
        assert isinstance(yaml.safe_load(path.read_text()), dict), path.name


def test_rayjob_runs_a_build_sized_to_its_gpu_workers():
    job = load("rayjob-build.yaml")
    assert job["apiVersion"] == "ray.io/v1" and job["kind"] == "RayJob"
    spec = job["spec"]
    args = build_args(entrypoint_args(spec["entrypoint"]))
    cluster = spec["rayClusterSpec"]
    gpu_groups = [
        g
        for g in cluster["workerGroupSpecs"]
        if any(gpus_of(c) for c in g["template"]["spec"]["containers"])
    ]
    assert gpu_groups, "a GPU worker group is required"
    total_gpus = 0
    for g in gpu_groups:
        (container,) = g["template"]["spec"]["containers"]
        per_pod = gpus_of(container)
        assert int(g["rayStartParams"]["num-gpus"]) == per_pod
        assert g["minReplicas"] <= g["replicas"] <= g["maxReplicas"]
        assert container["resources"]["limits"]["memory"]  # the teacher's memory is declared
        total_gpus += g["replicas"] * per_pod
    # one teacher actor per GPU
    assert args.workers == total_gpus
    assert args.device.startswith("cuda")
    assert int(cluster["headGroupSpec"]["rayStartParams"]["num-gpus"]) == 0
    assert cluster["authOptions"]["mode"] == "token"
    # the job's env is the shared runtime env (minus the upload-specific keys)
    job_env = yaml.safe_load(spec["runtimeEnvYAML"])
    assert job_env["env_vars"] == load("runtime_env.yaml")["env_vars"]


def test_raycluster_groups_are_consistent():
    rc = load("raycluster.yaml")
    assert rc["apiVersion"] == "ray.io/v1" and rc["kind"] == "RayCluster"
    spec = rc["spec"]
    assert spec["authOptions"]["mode"] == "token" and spec["enableInTreeAutoscaling"] is True
    saw_gpu = False
    for g in spec["workerGroupSpecs"]:
        assert g["minReplicas"] <= g["replicas"] <= g["maxReplicas"]
        (container,) = g["template"]["spec"]["containers"]
        per_pod = gpus_of(container)
        declared = int(g["rayStartParams"].get("num-gpus", 0))
        assert declared == per_pod, g["groupName"]
        saw_gpu |= per_pod > 0
    assert saw_gpu


def test_launcher_config_has_gpu_workers_within_bounds():
    cfg = load("ray-cluster-aws.yaml")
    assert cfg["provider"]["type"] == "aws"
    types = cfg["available_node_types"]
    assert cfg["head_node_type"] in types
    assert types[cfg["head_node_type"]]["resources"].get("GPU", 0) == 0
    gpu_types = {n: t for n, t in types.items() if t["resources"].get("GPU", 0) > 0}
    assert gpu_types
    for t in gpu_types.values():
        assert 0 <= t["min_workers"] <= t["max_workers"] <= cfg["max_workers"]
    starts = " ".join(cfg["head_start_ray_commands"] + cfg["worker_start_ray_commands"])
    assert starts.count("RAY_AUTH_MODE=token") == 2


def test_runtime_env_is_usable_by_submit_and_holds_no_secrets(tmp_path):
    from logitcache.jobs import build_runtime_env
    from logitcache.jobs.submit import load_runtime_env_file

    env = build_runtime_env(tmp_path, load_runtime_env_file(CLUSTER / "runtime_env.yaml"))
    assert ".venv/" in env["excludes"] and env["env_vars"]["TOKENIZERS_PARALLELISM"] == "false"


@pytest.mark.parametrize("path", sorted(CLUSTER.iterdir()), ids=lambda p: p.name)
def test_no_credentials_in_cluster_files(path):
    text = path.read_text()
    assert not re.search(r"AKIA[0-9A-Z]{16}", text)  # AWS access key ids
    assert not re.search(
        r"(?i)(secret_access_key|auth_token)\s*[:=]\s*['\"]?[A-Za-z0-9/+]{16,}", text
    )


def test_local_cluster_script_is_valid_bash():
    script = CLUSTER / "local_cluster.sh"
    assert script.stat().st_mode & 0o111, "local_cluster.sh must be executable"
    subprocess.run(["bash", "-n", str(script)], check=True)
    usage = subprocess.run(["bash", str(script)], capture_output=True, text=True)
    assert usage.returncode == 2 and "start|status|stop" in usage.stderr
