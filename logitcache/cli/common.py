"""Options shared by several subcommands."""

from __future__ import annotations

import argparse


def add_storage_options(p: argparse.ArgumentParser) -> None:
    """``--storage-options JSON`` of the commands without a config dataclass (info, verify,
    catalog, ...); build, generate and train get theirs from their config's fields."""
    from logitcache.storage import STORAGE_OPTIONS_HELP

    p.add_argument("--storage-options", default=None, metavar="JSON", help=STORAGE_OPTIONS_HELP)


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return f"{n:.1f} TiB"
