"""Ray job entrypoint for a generated dataset; same options as ``logitcache generate``.

    ray job submit --address http://HEAD:8265 --working-dir . -- \\
        python pipelines/generate_dataset.py --teacher smollm2-135m \\
        --prompts s3://b/prompts/*.jsonl --out s3://b/caches/smol-gen --n 4 --workers 4

Inside a Ray job RAY_ADDRESS is set, so the run joins the job's cluster.
"""

from __future__ import annotations

import argparse
import logging
import sys


def main(argv: list[str] | None = None) -> int:
    from logitcache.cli.generate import add_parser, config_from_args
    from logitcache.generate import generate_dataset

    parser = argparse.ArgumentParser(prog="generate_dataset", description=__doc__.split("\n")[0])
    add_parser(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    manifest = generate_dataset(config_from_args(args))
    logging.getLogger("generate_dataset").info("done: %s", manifest.stats.get("run"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
