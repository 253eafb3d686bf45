"""``logitcache export CACHE --to distillkit|axolotl --out DIR [--compression-config YAML]``."""

from __future__ import annotations

import argparse
import json

from logitcache.cli.common import add_storage_options


def add_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("cache", help="cache URI")
    p.add_argument("--to", dest="fmt", required=True, choices=["distillkit", "axolotl"])
    p.add_argument("--out", required=True, help="new (or empty) directory to write")
    p.add_argument(
        "--compression-config",
        default=None,
        metavar="YAML",
        help="DistillKit layout to write (default: DistillKit's recommended configuration)",
    )
    add_storage_options(p)


def run(args: argparse.Namespace) -> int:
    from logitcache.convert import export_cache

    result = export_cache(
        args.cache,
        args.fmt,
        args.out,
        compression_config=args.compression_config,
        storage_options=args.storage_options,
    )
    print(json.dumps({"out": args.out, "to": args.fmt, **result}))
    return 0
