"""Running logitcache commands as Ray jobs on a cluster (``logitcache submit`` / ``jobs``).

:mod:`.auth` resolves Ray's dashboard token (never exposed); :mod:`.submit` turns a logitcache
command line into a Ray job submission and follows it to its result.
"""

from logitcache.jobs.auth import Secret, auth_headers, resolve_token
from logitcache.jobs.submit import (
    EntrypointResources,
    SubmitRequest,
    build_runtime_env,
    entrypoint_resources,
    follow,
    make_client,
    project_dir,
    resolve_address,
    split_command,
    submission_id,
    submit,
    wait,
)

__all__ = [
    "EntrypointResources",
    "Secret",
    "SubmitRequest",
    "auth_headers",
    "build_runtime_env",
    "entrypoint_resources",
    "follow",
    "make_client",
    "project_dir",
    "resolve_address",
    "resolve_token",
    "split_command",
    "submission_id",
    "submit",
    "wait",
]
