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


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return f"{n:.1f} TiB"
