"""``logitcache generate``: the teacher writes responses to prompts; the cache keeps them with
the teacher's soft labels on every position and the loss on response tokens.

The flags are generated from :class:`~logitcache.generate.GenerateConfig`'s fields; the
sections shared with ``build`` give the same flags with the same defaults. The same parser
serves ``pipelines/generate_dataset.py`` (the Ray job entrypoint).
"""

from __future__ import annotations

import argparse
import json

from logitcache.cli.config_flags import add_config_flags
from logitcache.cli.config_flags import config_from_args as _from_args

# generate writes to --out only (no catalog), so --out is required here.
SKIP = ("output.catalog",)
REQUIRED = ("output.out",)
HELP = {"output.out": "cache URI (local path, s3://, memory://, ...)"}


def add_parser(p: argparse.ArgumentParser) -> None:
    from logitcache.generate.config import GenerateConfig

    add_config_flags(p, GenerateConfig, skip=SKIP, required=REQUIRED, help=HELP)


def config_from_args(args: argparse.Namespace):
    from logitcache.generate.config import GenerateConfig

    return _from_args(GenerateConfig, args, skip=SKIP)


def run(args: argparse.Namespace) -> int:
    from logitcache.generate import generate_dataset

    cfg = config_from_args(args)
    manifest = generate_dataset(cfg)
    run_stats = manifest.stats.get("run", {})
    print(
        json.dumps(
            {
                "out": cfg.output.out,
                "samples": manifest.num_sequences,
                "tokens": manifest.num_tokens,
                "bytes_per_token": manifest.stats.get("bytes_per_token"),
                "tokens_this_run": run_stats.get("tokens"),
                "wall_s": run_stats.get("wall_s"),
                "export_jsonl": cfg.export_jsonl,
            }
        )
    )
    return 0
