"""Ray job / torchrun entrypoint: train a student from a cache (same options as
``logitcache train``).

    python pipelines/train_student.py --cache s3://bucket/caches/c1 --student small --out runs/s1
    torchrun --nproc-per-node 8 pipelines/train_student.py --cache ... --out ...
    ray job submit -- python pipelines/train_student.py --cache ... --out ...
"""

from __future__ import annotations

import argparse
import json
import logging
import sys

from logitcache.cli.train import add_parser, config_from_args
from logitcache.train import train


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_parser(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    print(json.dumps(train(config_from_args(args))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
