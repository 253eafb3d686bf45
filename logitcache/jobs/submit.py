"""Run a logitcache command as a Ray job: ``logitcache submit [--address URL] -- build ...``.

The command line is checked with logitcache's own parser before anything is uploaded, then sent
through Ray's JobSubmissionClient with:

- a working_dir runtime env: the project directory (or the current one), without virtualenvs,
  git data, caches and model weights, so the cluster runs the same code as this checkout;
- entrypoint ``python -m logitcache <command>`` (works without the console script installed);
- entrypoint resources derived from the command: a Ray build's driver needs one CPU and no GPU
  (its teacher actors request the GPUs themselves; a driver holding one would starve them),
  a ``--no-ray`` build or a ``train`` on ``--device cuda`` needs one GPU;
- a submission id derived from the command line and the time, or given: submitting again with
  an id that exists attaches to that job instead of starting a second one.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as _dt
import getpass
import hashlib
import logging
import os
import re
import shlex
import socket
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from logitcache.errors import ConfigError, JobError
from logitcache.jobs.auth import auth_headers, resolve_token

log = logging.getLogger(__name__)

DEFAULT_ADDRESS = "http://127.0.0.1:8265"
WORKING_DIR_EXCLUDES = [
    ".venv/",
    "venv/",
    ".git/",
    "**/__pycache__/",
    ".pytest_cache/",
    ".ruff_cache/",
    "*.egg-info/",
    "caches/",
    "runs/",
    "*.gguf",
    "*.safetensors",
    "*.bin",
    "*.parquet",
]
# Environment variable names that look like credentials: refused in a job's runtime env, which
# the dashboard shows to anyone who can list jobs.
_SECRET_NAME = re.compile(
    r"(^|_)(TOKEN|SECRET|PASSWORD|PASSWD|CREDENTIALS?|PRIVATE|KEY|APIKEY)(_|$)", re.I
)
_ID_SAFE = re.compile(r"[^A-Za-z0-9_-]+")
EXIT_STOPPED = 3


def resolve_address(address: str | None) -> str:
    """``--address``, else ``RAY_API_SERVER_ADDRESS`` / an http ``RAY_ADDRESS``, else local."""
    if address:
        return address
    for var in ("RAY_API_SERVER_ADDRESS", "RAY_ADDRESS"):
        value = os.environ.get(var, "")
        if value.startswith(("http://", "https://")):
            return value
    return DEFAULT_ADDRESS


def split_command(command: Sequence[str]) -> list[str]:
    """The logitcache command line after ``--`` (a leading ``logitcache`` is dropped)."""
    cmd = list(command)
    if cmd and cmd[0] == "--":
        cmd = cmd[1:]
    if cmd and Path(cmd[0]).name == "logitcache":
        cmd = cmd[1:]
    if not cmd:
        raise ConfigError(
            "no command to submit: give it after --, e.g. "
            "`logitcache submit -- build --teacher smollm2-135m --corpus ... --out s3://...`"
        )
    if cmd[0] in {"submit", "jobs"}:
        raise ConfigError(f"`logitcache {cmd[0]}` runs on your machine; it cannot be submitted")
    return cmd


@dataclass(frozen=True, kw_only=True)
class EntrypointResources:
    num_cpus: float = 1.0
    num_gpus: float = 0.0

    def __post_init__(self) -> None:
        if self.num_cpus < 0 or self.num_gpus < 0:
            raise ConfigError("entrypoint CPUs and GPUs must be >= 0")


def entrypoint_resources(args: argparse.Namespace | None) -> EntrypointResources:
    """What the job's driver process itself needs (see the module docstring)."""
    if args is None:
        return EntrypointResources()
    command = getattr(args, "command", None)
    device = str(getattr(args, "device", "") or "")
    on_gpu = device.startswith("cuda")
    if command == "build":
        if getattr(args, "no_ray", False):
            threads = getattr(args, "threads", None) or 1
            return EntrypointResources(num_cpus=float(threads), num_gpus=1.0 if on_gpu else 0.0)
        return EntrypointResources(num_cpus=1.0, num_gpus=0.0)
    return EntrypointResources(num_cpus=1.0, num_gpus=1.0 if on_gpu else 0.0)


def project_dir(start: Path | None = None) -> Path:
    """The logitcache checkout this code runs from, if it is one; else the current directory."""
    here = Path(__file__).resolve().parents[2]
    if (here / "pyproject.toml").is_file() and (here / "logitcache").is_dir():
        return here
    return (start or Path.cwd()).resolve()


def submission_id(cmd: Sequence[str], now: float | None = None) -> str:
    """``logitcache-<command>-<UTC time>-<hash of command line and time>``."""
    now = time.time() if now is None else now
    stamp = _dt.datetime.fromtimestamp(now, _dt.timezone.utc).strftime("%Y%m%d-%H%M%S")
    digest = hashlib.sha256(f"{shlex.join(cmd)}\0{now!r}".encode()).hexdigest()[:8]
    name = _ID_SAFE.sub("-", cmd[0].lstrip("-")) or "cmd"
    return f"logitcache-{name}-{stamp}-{digest}"


def check_env_vars(env_vars: Mapping[str, str]) -> dict[str, str]:
    bad = sorted(k for k in env_vars if _SECRET_NAME.search(k))
    if bad:
        raise ConfigError(
            f"runtime env variables {bad} look like credentials; a job's runtime env is visible "
            "to everyone who can list jobs. Give the cluster's nodes their own credentials "
            "(instance roles, Kubernetes secrets) instead."
        )
    return {str(k): str(v) for k, v in env_vars.items()}


def build_runtime_env(working_dir: Path, extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """working_dir + excludes, merged with a runtime env file's content (pip, env_vars...)."""
    extra = dict(extra or {})
    env = {
        "working_dir": str(working_dir),
        "excludes": sorted(set(WORKING_DIR_EXCLUDES) | set(extra.pop("excludes", []))),
    }
    if "working_dir" in extra and extra["working_dir"] not in (".", str(working_dir)):
        env["working_dir"] = extra.pop("working_dir")
    extra.pop("working_dir", None)
    env_vars = check_env_vars(extra.pop("env_vars", {}) or {})
    env_vars.setdefault("TOKENIZERS_PARALLELISM", "false")
    env["env_vars"] = env_vars
    env.update(extra)
    return env


def load_runtime_env_file(path: str | os.PathLike) -> dict[str, Any]:
    import yaml

    try:
        data = yaml.safe_load(Path(path).read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot read runtime env file {path}: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"runtime env file {path} must hold a mapping (working_dir, pip, ...)")
    return data


@dataclass(kw_only=True)
class SubmitRequest:
    """One submission, fully resolved before anything is sent."""

    command: list[str]
    address: str = DEFAULT_ADDRESS
    submission_id: str | None = None
    runtime_env: dict[str, Any] = field(default_factory=dict)
    resources: EntrypointResources = field(default_factory=EntrypointResources)

    def __post_init__(self) -> None:
        self.command = split_command(self.command)
        if self.submission_id is not None and not re.fullmatch(
            r"[A-Za-z0-9_.\-]{1,128}", self.submission_id
        ):
            raise ConfigError(
                f"--submission-id {self.submission_id!r}: use 1-128 letters, digits, '_', '.', '-'"
            )
        self.submission_id = self.submission_id or submission_id(self.command)

    @property
    def entrypoint(self) -> str:
        return shlex.join(["python", "-m", "logitcache", *self.command])

    @property
    def metadata(self) -> dict[str, str]:
        from logitcache import __version__

        return {
            "logitcache_command": shlex.join(self.command)[:1000],
            "logitcache_version": __version__,
            "submitted_by": f"{getpass.getuser()}@{socket.gethostname()}",
        }


def make_client(address: str):
    """A JobSubmissionClient that authenticates with the dashboard token, if there is one."""
    from ray.exceptions import RayError
    from ray.job_submission import JobSubmissionClient

    token, source = resolve_token()
    log.debug("dashboard token: %s", "from " + source if token else "none")
    try:
        return JobSubmissionClient(address, headers=auth_headers(token))
    except (ConnectionError, RuntimeError, ValueError, RayError) as exc:
        raise JobError(_explain(exc, address, token is not None)) from None


def _explain(exc: BaseException, address: str, had_token: bool) -> str:
    text = str(exc)
    if "401" in text or "403" in text or "uthentication" in text or "nauthorized" in text:
        hint = (
            "the token was refused; check it is this cluster's token"
            if had_token
            else "the cluster requires a token: set RAY_AUTH_TOKEN or RAY_AUTH_TOKEN_PATH "
            "(on the head node, `ray get-auth-token` prints it)"
        )
        return f"Ray dashboard at {address} refused the request: {hint}."
    return (
        f"cannot reach the Ray dashboard at {address}: {text.splitlines()[0] if text else exc!r}. "
        "Pass --address http://HEAD:8265 (or set RAY_ADDRESS) and check the cluster is up."
    )


def submit(client, req: SubmitRequest) -> str:
    """Submit ``req`` (or attach to an existing job with the same id); return the id."""
    try:
        existing = client.get_job_info(req.submission_id)
    except RuntimeError:
        existing = None
    if existing is not None:
        log.info("job %s already exists (%s); attaching to it", req.submission_id, existing.status)
        return req.submission_id
    try:
        return client.submit_job(
            entrypoint=req.entrypoint,
            submission_id=req.submission_id,
            runtime_env=req.runtime_env,
            metadata=req.metadata,
            entrypoint_num_cpus=req.resources.num_cpus,
            entrypoint_num_gpus=req.resources.num_gpus or None,
        )
    except (RuntimeError, ValueError, ConnectionError) as exc:
        raise JobError(_explain(exc, req.address, True)) from None


def follow(client, job_id: str, write: Callable[[str], Any], poll_s: float = 1.0) -> int:
    """Stream the job's logs through ``write`` until it ends; return the exit code to use."""

    async def tail() -> None:
        async for chunk in client.tail_job_logs(job_id):
            write(chunk)

    try:
        asyncio.run(tail())
    except RuntimeError as exc:  # a dropped websocket: fall back to polling
        log.warning("log stream interrupted (%s); waiting for the job to end", exc)
    return wait(client, job_id, poll_s=poll_s)


def wait(client, job_id: str, poll_s: float = 1.0, timeout_s: float | None = None) -> int:
    """Poll until the job is terminal; 0 on SUCCEEDED, its driver's code (or 1) on FAILED."""
    from ray.job_submission import JobStatus

    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    while True:
        info = client.get_job_info(job_id)
        if info.status.is_terminal():
            break
        if deadline is not None and time.monotonic() > deadline:
            raise JobError(f"job {job_id} still {info.status} after {timeout_s:.0f} s")
        time.sleep(poll_s)
    if info.status == JobStatus.SUCCEEDED:
        log.info("job %s succeeded", job_id)
        return 0
    if info.status == JobStatus.STOPPED:
        log.warning("job %s was stopped", job_id)
        return EXIT_STOPPED
    code = getattr(info, "driver_exit_code", None)
    log.error("job %s failed: %s", job_id, (info.message or "").strip()[:500])
    return int(code) if isinstance(code, int) and code > 0 else 1


__all__ = [
    "EntrypointResources",
    "SubmitRequest",
    "build_runtime_env",
    "entrypoint_resources",
    "follow",
    "make_client",
    "project_dir",
    "resolve_address",
    "split_command",
    "submission_id",
    "submit",
    "wait",
]
