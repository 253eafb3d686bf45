"""Job submission pieces that need no cluster: command checks, resources, ids, token handling."""

from __future__ import annotations

import pickle

import pytest

from logitcache.cli.submit import parse_command
from logitcache.errors import ConfigError
from logitcache.jobs import (
    SubmitRequest,
    auth_headers,
    build_runtime_env,
    entrypoint_resources,
    resolve_token,
    split_command,
    submission_id,
)


def test_split_command_accepts_both_spellings():
    assert split_command(["--", "info", "x"]) == ["info", "x"]
    assert split_command(["logitcache", "info", "x"]) == ["info", "x"]
    with pytest.raises(ConfigError, match="after --"):
        split_command(["--"])
    with pytest.raises(ConfigError, match="cannot be submitted"):
        split_command(["submit", "--", "info", "x"])


def test_command_is_checked_locally_before_upload(capsys):
    with pytest.raises(ConfigError, match="not a valid command line"):
        parse_command(["info"])  # missing CACHE
    assert "required" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="choose one of"):
        parse_command(["biuld", "--teacher", "x"])
    assert parse_command(["--version"]) is None


def test_entrypoint_resources_follow_the_command():
    ray_build = parse_command(
        ["build", "--teacher", "t", "--corpus", "c", "--out", "o", "--workers", "4"]
    )
    # The driver of a Ray build holds no GPU: its teacher actors request them.
    assert entrypoint_resources(ray_build).num_gpus == 0
    local_gpu = parse_command(
        ["build", "--teacher", "t", "--corpus", "c", "--out", "o", "--no-ray", "--device", "cuda"]
    )
    res = entrypoint_resources(local_gpu)
    assert res.num_gpus == 1 and res.num_cpus >= 1
    assert entrypoint_resources(parse_command(["info", "c"])).num_gpus == 0


def test_submission_id_is_stable_for_a_command_and_time():
    cmd = ["info", "s3://b/c"]
    a = submission_id(cmd, now=1_700_000_000.0)
    assert a == submission_id(cmd, now=1_700_000_000.0)
    assert a != submission_id(["info", "s3://b/d"], now=1_700_000_000.0)
    assert a != submission_id(cmd, now=1_700_000_001.0)
    assert a.startswith("logitcache-info-20231114-")
    req = SubmitRequest(command=["--", "info", "x"], submission_id="my-job.1")
    assert req.submission_id == "my-job.1"
    assert req.entrypoint == "python -m logitcache info x"
    with pytest.raises(ConfigError, match="submission-id"):
        SubmitRequest(command=["info", "x"], submission_id="bad id")


def test_runtime_env_excludes_heavy_dirs_and_refuses_credentials(tmp_path):
    env = build_runtime_env(tmp_path, {"env_vars": {"HF_HUB_OFFLINE": "1"}, "pip": ["x"]})
    assert env["working_dir"] == str(tmp_path)
    assert ".venv/" in env["excludes"] and ".git/" in env["excludes"]
    assert env["env_vars"]["HF_HUB_OFFLINE"] == "1" and env["pip"] == ["x"]
    assert "TOKENIZERS_PARALLELISM" in build_runtime_env(tmp_path, {})["env_vars"]
    for name in ("RAY_AUTH_TOKEN", "AWS_SECRET_ACCESS_KEY", "HF_TOKEN", "OPENAI_API_KEY"):
        with pytest.raises(ConfigError, match="look like credentials"):
            build_runtime_env(tmp_path, {"env_vars": {name: "v"}})


def test_token_resolution_order_and_secrecy(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("RAY_AUTH_TOKEN", raising=False)
    monkeypatch.delenv("RAY_AUTH_TOKEN_PATH", raising=False)
    assert resolve_token() == (None, "none")
    assert auth_headers(None) == {}
    (tmp_path / ".ray").mkdir()
    (tmp_path / ".ray" / "auth_token").write_text("from-home\n")
    token, source = resolve_token()
    assert token.reveal() == "from-home" and source.endswith("auth_token")
    path = tmp_path / "tok"
    path.write_text("from-path")
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(path))
    assert resolve_token()[0].reveal() == "from-path"
    monkeypatch.setenv("RAY_AUTH_TOKEN", "from-env")
    token, source = resolve_token()
    assert token.reveal() == "from-env" and source == "$RAY_AUTH_TOKEN"
    assert auth_headers(token) == {"Authorization": "Bearer from-env"}
    assert "from-env" not in repr(token) and "from-env" not in f"{token}"
    with pytest.raises(TypeError):
        pickle.dumps(token)
    monkeypatch.delenv("RAY_AUTH_TOKEN")
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(tmp_path / "missing"))
    with pytest.raises(ConfigError, match="not a file"):
        resolve_token()
