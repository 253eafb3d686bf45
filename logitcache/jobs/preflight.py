"""Before a submitted command runs: does the cluster's Python import logitcache and its
dependencies?

A head whose Python lacks them would otherwise fail inside the job, with
``ModuleNotFoundError: No module named 'fsspec'`` in the job log. :func:`check_cluster_python`
submits ``python -m logitcache.jobs.preflight`` with the job's own runtime env first; the probe
imports every module logitcache needs and prints what is missing as one JSON line. Only the
standard library is imported at the top, so the probe itself runs on any Python.
"""

from __future__ import annotations

import importlib
import json
import os
import sys

# Import names of logitcache's runtime dependencies (pyproject.toml ``dependencies``).
REQUIRED_MODULES = (
    "numpy",
    "pyarrow",
    "fsspec",
    "s3fs",
    "zstandard",
    "numba",
    "tqdm",
    "torch",
    "transformers",
    "safetensors",
    "ray",
)
# The pip requirements ``submit --runtime-env-pip`` installs in the job's runtime env.
PIP_REQUIREMENTS = (
    "numpy>=1.26",
    "pyarrow>=15",
    "fsspec>=2024.6",
    "s3fs>=2024.6",
    "zstandard>=0.22",
    "numba>=0.60",
    "tqdm>=4.66",
    "torch>=2.4",
    "transformers>=4.46",
    "safetensors>=0.4",
    "accelerate>=0.34",
    "gguf>=0.10",
    "torchdata>=0.9",
)
MARKER = "LOGITCACHE_PREFLIGHT "
# Extra module names to require (tests use it to see a failing probe on a healthy cluster).
EXTRA_ENV = "LOGITCACHE_PREFLIGHT_EXTRA"


def missing_modules() -> list[str]:
    extra = [m for m in os.environ.get(EXTRA_ENV, "").split(",") if m]
    missing = []
    for name in ("logitcache", *REQUIRED_MODULES, *extra):
        try:
            importlib.import_module(name)
        except ImportError:
            missing.append(name)
    return missing


def main() -> int:
    missing = missing_modules()
    print(MARKER + json.dumps({"python": sys.executable, "missing": missing}), flush=True)
    return 1 if missing else 0


def check_cluster_python(
    client, runtime_env: dict, *, address: str = "", timeout_s: float = 600
) -> None:
    """Run the probe on the cluster with ``runtime_env``; raise JobError saying how to fix a
    Python that lacks logitcache or its dependencies."""
    import uuid

    from logitcache.errors import JobError
    from logitcache.jobs.submit import _explain, wait

    job_id = f"logitcache-preflight-{uuid.uuid4().hex[:10]}"
    try:
        client.submit_job(
            entrypoint="python -m logitcache.jobs.preflight",
            submission_id=job_id,
            runtime_env=runtime_env,
            entrypoint_num_cpus=0,
        )
    except (RuntimeError, ValueError, ConnectionError) as exc:
        raise JobError(_explain(exc, address, True)) from None
    code = wait(client, job_id, timeout_s=timeout_s)
    logs = client.get_job_logs(job_id)
    report = next(
        (json.loads(line[len(MARKER) :]) for line in logs.splitlines() if line.startswith(MARKER)),
        None,
    )
    if code == 0 and report is not None:
        return
    missing = report["missing"] if report else []
    what = (
        f"lacks {', '.join(missing)}"
        if missing
        else "could not run the probe (" + (logs.strip().splitlines() or ["no output"])[-1] + ")"
    )
    raise JobError(
        f"the cluster's Python {report['python'] if report else ''} {what}, so the job would "
        "fail on import. Run the cluster on the image built from cluster/Dockerfile (logitcache "
        "and its dependencies installed), or pass --runtime-env-pip to install them in this "
        "job's runtime env. Skip this check with --no-preflight."
    )


if __name__ == "__main__":
    sys.exit(main())
