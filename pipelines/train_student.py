"""Ray job / torchrun entrypoint: train a student from a cache (same options as
``logitcache train``).

    python pipelines/train_student.py --cache s3://bucket/caches/c1 --student small --out runs/s1
    torchrun --nproc-per-node 8 pipelines/train_student.py --cache ... --out ...
    ray job submit -- python pipelines/train_student.py --cache ... --out ...
"""

from __future__ import annotations

import sys

from logitcache.cli import main as cli_main


def main(argv: list[str] | None = None) -> int:
    """``logitcache train ...``: the same parser, config and error handling as the CLI."""
    return cli_main(["train", *(sys.argv[1:] if argv is None else argv)], prog="train_student")


if __name__ == "__main__":
    sys.exit(main())
