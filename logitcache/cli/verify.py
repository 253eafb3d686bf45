"""``logitcache verify CACHE``: exit 0 only when every shard checks out."""

from __future__ import annotations

import argparse
import sys

from tqdm.auto import tqdm

from logitcache.cli.common import add_storage_options
from logitcache.format import open_cache, verify_cache


def add_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("cache", help="cache URI")
    add_storage_options(p)


def run(args: argparse.Namespace) -> int:
    cache = open_cache(args.cache, args.storage_options)
    with tqdm(total=len(cache.shards), unit="shard", disable=not sys.stderr.isatty()) as bar:
        report = verify_cache(cache, progress=lambda _s: bar.update(1))
    for problem in report.problems:
        print(f"BAD {problem}")
    status = "OK" if report.ok else f"FAILED ({len(report.problems)} problem(s))"
    print(
        f"{status}: {report.shards_checked} shards checked, {report.sequences} sequences, "
        f"{report.tokens} tokens verified"
    )
    if report.manifest_integrity == "unchecked":
        print(
            "NOTE the manifest has no checksum (written before manifests carried one): its "
            "descriptive fields are unchecked; the next build or commit into it adds one"
        )
    else:
        print("manifest checksum OK")
    return 0 if report.ok else 1
