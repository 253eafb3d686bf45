"""Ray job entrypoint for a generated dataset; same options as ``logitcache generate``.

    ray job submit --address http://HEAD:8265 --working-dir . -- \\
        python pipelines/generate_dataset.py --teacher smollm2-135m \\
        --prompts s3://b/prompts/*.jsonl --out s3://b/caches/smol-gen --n 4 --workers 4

Inside a Ray job RAY_ADDRESS is set, so the run joins the job's cluster.
"""

from __future__ import annotations

import sys

from logitcache.cli import main as cli_main


def main(argv: list[str] | None = None) -> int:
    """``logitcache generate ...``: the same parser, config and error handling as the CLI."""
    return cli_main(
        ["generate", *(sys.argv[1:] if argv is None else argv)], prog="generate_dataset"
    )


if __name__ == "__main__":
    sys.exit(main())
