"""``logitcache submit`` / ``jobs`` against a real head started with ``ray start --head`` on
127.0.0.1, with dashboard token authentication on.

Note: in Ray 2.60, ``ray start --head`` enables token auth by default only when a token exists
(``ray get-auth-token --generate`` writes ``~/.ray/auth_token``); ``ray.init()`` enables it
unconditionally. The head here is started the documented way, in a private HOME. It is torn
down by killing exactly the processes it started (never ``ray stop``, which would stop every
Ray on the machine).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from logitcache.codecs import CodecContext, get_codec
from logitcache.format import CacheWriter, Manifest, write_shard
from logitcache.format.shard import encode_table

pytestmark = pytest.mark.slow
BIN = Path(sys.executable).parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _kill_tree(*markers: str) -> None:
    """Terminate the processes whose command line names a marker, and their children."""
    import psutil

    found = {}
    for p in psutil.process_iter(["cmdline"]):
        try:
            if p.pid != os.getpid() and any(
                m in a for m in markers for a in p.info["cmdline"] or []
            ):
                found[p.pid] = p
                found.update({c.pid: c for c in p.children(recursive=True)})
        except psutil.Error:
            pass
    for p in found.values():
        try:
            p.terminate()
        except psutil.Error:
            pass
    _, alive = psutil.wait_procs(list(found.values()), timeout=10)
    for p in alive:
        try:
            p.kill()
        except psutil.Error:
            pass


def _env(home: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env.update(HOME=str(home), PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}", **extra)
    env["RAY_ENABLE_UV_RUN_RUNTIME_ENV"] = "0"
    env["RAY_USAGE_STATS_ENABLED"] = "0"
    return env


@pytest.fixture(scope="module")
def ray_head():
    base = Path(tempfile.mkdtemp(prefix="lcjob", dir="/tmp"))  # short: unix socket paths
    home, tmp = base / "home", base / "ray"
    home.mkdir()
    env = _env(home)
    subprocess.run(
        [BIN / "ray", "get-auth-token", "--generate"],
        env=env,
        check=True,
        stdout=subprocess.DEVNULL,  # the command prints the token: keep it out of test logs
        stderr=subprocess.DEVNULL,
    )
    token = (home / ".ray" / "auth_token").read_text().strip()
    dash, client_port = _free_port(), _free_port()
    start = [
        BIN / "ray",
        "start",
        "--head",
        "--node-ip-address=127.0.0.1",
        f"--port={_free_port()}",
        "--dashboard-host=127.0.0.1",
        f"--dashboard-port={dash}",
        f"--ray-client-server-port={client_port}",
        f"--dashboard-agent-listen-port={_free_port()}",
        "--num-cpus=2",
        "--num-gpus=0",
        f"--temp-dir={tmp}",
        "--disable-usage-stats",
    ]
    proc = subprocess.run(start, env=env, capture_output=True, text=True, timeout=120)
    try:
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert "Token authentication is enabled" in proc.stderr + proc.stdout
        yield {"address": f"http://127.0.0.1:{dash}", "home": home, "token": token}
    finally:
        # the Ray client proxy does not name the temp dir, only its own port
        _kill_tree(str(tmp), f"--port={client_port}")
        shutil.rmtree(base, ignore_errors=True)


def _lc(head, *args: str, home: Path | None = None, timeout: int = 120):
    env = _env(home or head["home"])
    return subprocess.run(
        [sys.executable, "-m", "logitcache", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=Path(__file__).resolve().parents[2],
    )


def _client(head):
    from ray.job_submission import JobSubmissionClient

    return JobSubmissionClient(
        head["address"], headers={"Authorization": f"Bearer {head['token']}"}
    )


def build_small_cache(path: Path, sample_factory) -> int:
    ctx = CodecContext(vocab_size=200, top_k=4, rs_samples=0)
    codec = get_codec("raw")
    header = Manifest(
        teacher={"name": "tiny-random", "backend": "transformers", "weights_sha256": "ab" * 32},
        tokenizer={"name": "tiny", "vocab_size": 200, "vocab_sha256": "cd" * 32},
        capture={"top_k": 4, "rs_samples": 0, "seq_len": 16},
        codec=codec.describe(),
        corpus={"fingerprint": "f1"},
    )
    writer = CacheWriter.open(str(path), header)
    samples = sample_factory(ctx, seed=0)
    writer.commit([write_shard(writer.store, "u0", encode_table(samples, codec, ctx))])
    writer.finish()
    return len(samples)


def test_submit_streams_logs_and_returns_job_result(ray_head, tmp_path, sample_factory):
    n = build_small_cache(tmp_path / "cache", sample_factory)
    job_id = "lc-test-info-ok"
    out = _lc(
        ray_head,
        "submit",
        "--address",
        ray_head["address"],
        "--submission-id",
        job_id,
        "--",
        "info",
        str(tmp_path / "cache"),
        "--json",
    )
    assert out.returncode == 0, out.stderr[-3000:]
    # the job's own output was streamed back: info's JSON summary of the cache
    assert f'"sequences": {n}' in out.stdout and '"teacher": "tiny-random"' in out.stdout

    client = _client(ray_head)
    info = client.get_job_info(job_id)
    assert str(info.status) == "SUCCEEDED"
    assert info.entrypoint == f"python -m logitcache info {tmp_path / 'cache'} --json"
    assert info.metadata["logitcache_command"].startswith("info ")
    token = ray_head["token"]
    for text in (out.stdout, out.stderr, repr(info.metadata), repr(info.runtime_env)):
        assert token not in text
    assert token not in client.get_job_logs(job_id)

    status = _lc(ray_head, "jobs", "--address", ray_head["address"], "status", job_id)
    assert status.returncode == 0 and "SUCCEEDED" in status.stdout
    assert token not in status.stdout + status.stderr


def test_failed_job_exit_code_and_missing_token(ray_head, tmp_path):
    out = _lc(
        ray_head, "submit", "--address", ray_head["address"], "--", "info", str(tmp_path / "nope")
    )
    assert out.returncode == 2  # the job's own exit code (logitcache errors exit with 2)
    assert "no cache at" in out.stdout

    no_token_home = tmp_path / "other-home"
    no_token_home.mkdir()
    refused = _lc(
        ray_head, "submit", "--address", ray_head["address"], "--", "--version", home=no_token_home
    )
    assert refused.returncode == 2
    assert "requires a token" in refused.stderr and "RAY_AUTH_TOKEN" in refused.stderr


def test_jobs_stop(ray_head):
    client = _client(ray_head)
    job_id = client.submit_job(entrypoint="sleep 120", submission_id="lc-test-sleeper")
    out = _lc(ray_head, "jobs", "--address", ray_head["address"], "stop", job_id, "--wait")
    assert out.returncode == 3, out.stderr[-2000:]  # EXIT_STOPPED
    assert str(client.get_job_info(job_id).status) == "STOPPED"


def test_preflight_names_missing_modules_and_the_fix(ray_head, tmp_path):
    """A cluster Python that lacks a module logitcache needs fails before the real job, with
    the fix; simulated on this healthy head by requiring one more module in the probe."""
    env_file = tmp_path / "env.yaml"
    env_file.write_text("env_vars:\n  LOGITCACHE_PREFLIGHT_EXTRA: no_such_module_lc13\n")
    out = _lc(
        ray_head,
        "submit",
        "--address",
        ray_head["address"],
        "--runtime-env",
        str(env_file),
        "--submission-id",
        "lc-test-never-submitted",
        "--",
        "info",
        str(tmp_path / "cache"),
    )
    assert out.returncode == 2, out.stderr[-2000:]
    err = out.stderr.strip().splitlines()[-1]
    assert "lacks no_such_module_lc13" in err and "--runtime-env-pip" in err
    assert "cluster/Dockerfile" in err
    jobs = {j.submission_id for j in _client(ray_head).list_jobs()}
    assert "lc-test-never-submitted" not in jobs  # the real job never started
