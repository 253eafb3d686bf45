"""``logitcache build``: capture a teacher's soft labels over a corpus into a cache.

The flags are generated from :class:`~logitcache.capture.CaptureConfig`'s fields (names,
defaults, help), so the CLI and Python callers share one source. The same parser serves
``pipelines/build_cache.py`` (the Ray job entrypoint) and ``logitcache submit``.
"""

from __future__ import annotations

import argparse
import json

from logitcache.cli.config_flags import add_config_flags
from logitcache.cli.config_flags import config_from_args as _from_args


def add_parser(p: argparse.ArgumentParser) -> None:
    from logitcache.capture.config import CaptureConfig

    add_config_flags(p, CaptureConfig)


def config_from_args(args: argparse.Namespace):
    from logitcache.capture.config import CaptureConfig

    return _from_args(CaptureConfig, args)


def run(args: argparse.Namespace) -> int:
    from logitcache.capture import build_cache

    cfg = config_from_args(args)
    manifest = build_cache(cfg)
    uri = cfg.output.out
    if cfg.output.catalog:
        from logitcache.catalog import Catalog, catalog_key

        uri = Catalog.open(cfg.output.catalog, cfg.output.storage_options).cache_uri(
            catalog_key(manifest)
        )
    run_stats = manifest.stats.get("run", {})
    print(
        json.dumps(
            {
                "out": uri,
                "sequences": manifest.num_sequences,
                "tokens": manifest.num_tokens,
                "bytes_per_token": manifest.stats.get("bytes_per_token"),
                "tokens_this_run": run_stats.get("tokens"),
                "wall_s": run_stats.get("wall_s"),
                "tokens_per_s": run_stats.get("tokens_per_s"),
            }
        )
    )
    return 0
