"""Ray job entrypoint for a cache build; same options as ``logitcache build``.

    ray job submit --address http://HEAD:8265 --working-dir . -- \\
        python pipelines/build_cache.py --teacher smollm2-135m --corpus s3://b/corpus/*.jsonl \\
        --out s3://b/caches/smol --workers 4

Inside a Ray job RAY_ADDRESS is set, so the build joins the job's cluster instead of starting
a local one.
"""

from __future__ import annotations

import argparse
import logging
import sys


def main(argv: list[str] | None = None) -> int:
    from logitcache.capture import build_cache
    from logitcache.cli.build import add_parser, config_from_args

    parser = argparse.ArgumentParser(prog="build_cache", description=__doc__.split("\n")[0])
    add_parser(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    manifest = build_cache(config_from_args(args))
    logging.getLogger("build_cache").info("done: %s", manifest.stats.get("run"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
