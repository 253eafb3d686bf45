"""``logitcache submit [--address URL] [--submission-id ID] [--no-wait] -- COMMAND ...``."""

from __future__ import annotations

import argparse
import logging
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path

from logitcache.errors import ConfigError

log = logging.getLogger(__name__)


def parse_command(cmd: Sequence[str]) -> argparse.Namespace | None:
    """Parse with logitcache's own CLI parser so a typo fails here, not on the cluster."""
    from logitcache.cli import COMMANDS, build_parser

    if cmd[0] not in COMMANDS:
        if cmd[0].startswith("-"):
            return None  # e.g. --version: nothing to check
        raise ConfigError(f"unknown command {cmd[0]!r}; choose one of {', '.join(COMMANDS)}")
    parser = build_parser({cmd[0]: COMMANDS[cmd[0]]})
    try:
        return parser.parse_args(list(cmd))
    except SystemExit as exc:  # argparse already printed the reason
        raise ConfigError(
            f"`logitcache {shlex.join(cmd)}` is not a valid command line (see above)"
        ) from exc


def add_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--address",
        default=None,
        help="Ray dashboard URL, e.g. http://HEAD:8265 (default: RAY_ADDRESS if it is an "
        "http URL, else http://127.0.0.1:8265). The dashboard token is read from "
        "RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH or ~/.ray/auth_token",
    )
    p.add_argument(
        "--submission-id",
        default=None,
        help="job id (default: derived from the command line and the time); an id that "
        "already exists is attached to instead of submitted twice",
    )
    p.add_argument("--no-wait", action="store_true", help="print the job id and return at once")
    p.add_argument(
        "--working-dir",
        default=None,
        help="directory uploaded as the job's working_dir (default: this logitcache checkout, "
        "else the current directory)",
    )
    p.add_argument(
        "--runtime-env",
        default=None,
        metavar="YAML",
        help="runtime env file merged in (pip, env_vars, ...), e.g. cluster/runtime_env.yaml",
    )
    p.add_argument(
        "--runtime-env-pip",
        action="store_true",
        help="install logitcache's dependencies in the job's runtime env (pip), for a cluster "
        "whose image lacks them (the image from cluster/Dockerfile has them)",
    )
    p.add_argument(
        "--no-preflight",
        action="store_true",
        help="skip the check that the cluster's Python imports logitcache and its dependencies",
    )
    p.add_argument("--entrypoint-num-cpus", type=float, default=None)
    p.add_argument("--entrypoint-num-gpus", type=float, default=None)
    p.add_argument(
        "argv",  # not "command": that is the top-level parser's subcommand name
        metavar="COMMAND",
        nargs=argparse.REMAINDER,
        help="the logitcache command line, after --",
    )


def run(args: argparse.Namespace) -> int:
    from logitcache.jobs import (
        EntrypointResources,
        SubmitRequest,
        build_runtime_env,
        entrypoint_resources,
        follow,
        make_client,
        project_dir,
        resolve_address,
        split_command,
        submit,
    )
    from logitcache.jobs.submit import load_runtime_env_file

    command = split_command(args.argv)
    parsed = parse_command(command)
    res = entrypoint_resources(parsed)
    res = EntrypointResources(
        num_cpus=res.num_cpus if args.entrypoint_num_cpus is None else args.entrypoint_num_cpus,
        num_gpus=res.num_gpus if args.entrypoint_num_gpus is None else args.entrypoint_num_gpus,
    )
    extra = load_runtime_env_file(args.runtime_env) if args.runtime_env else {}
    if args.runtime_env_pip:
        from logitcache.jobs.preflight import PIP_REQUIREMENTS

        pip = extra.get("pip") or []
        pip = list(pip.get("packages", [])) if isinstance(pip, dict) else list(pip)
        extra["pip"] = sorted(set(pip) | set(PIP_REQUIREMENTS))
    working_dir = Path(args.working_dir).resolve() if args.working_dir else project_dir()
    req = SubmitRequest(
        command=command,
        address=resolve_address(args.address),
        submission_id=args.submission_id,
        runtime_env=build_runtime_env(working_dir, extra),
        resources=res,
    )
    client = make_client(req.address)
    if not args.no_preflight:
        from logitcache.jobs.preflight import check_cluster_python

        check_cluster_python(client, req.runtime_env, address=req.address)
    job_id = submit(client, req)
    print(f"submitted job {job_id} to {req.address}", file=sys.stderr)
    if args.no_wait:
        print(job_id)
        return 0
    try:
        code = follow(client, job_id, lambda s: (sys.stdout.write(s), sys.stdout.flush()))
    except KeyboardInterrupt:
        print(
            f"\nstopped following; job {job_id} keeps running. "
            f"`logitcache jobs status {job_id}` / `logitcache jobs stop {job_id}`",
            file=sys.stderr,
        )
        return 130
    print(f"job {job_id} finished with exit code {code}", file=sys.stderr)
    return code
