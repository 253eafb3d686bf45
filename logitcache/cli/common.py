"""Options shared by several subcommands."""

from __future__ import annotations

import argparse


def add_storage_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--storage-options",
        default=None,
        metavar="JSON",
        help='fsspec options for the URI as JSON, e.g. \'{"client_kwargs": {"region_name": "eu-west-1"}}\'; '
        "AWS_* environment variables (AWS_ENDPOINT_URL included) are honoured for s3://",
    )


def add_replica_options(p: argparse.ArgumentParser) -> None:
    """The size of one teacher replica; build and generate place replicas the same way."""
    p.add_argument(
        "--gpus-per-teacher",
        type=int,
        default=1,
        metavar="N",
        help="GPUs per teacher replica, tensor parallel within one node (--workers counts replicas)",
    )
    p.add_argument(
        "--pipeline-parallel",
        type=int,
        default=1,
        metavar="M",
        help="pipeline stages per replica, each of --gpus-per-teacher GPUs (vLLM: across nodes)",
    )


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return f"{n:.1f} TiB"
