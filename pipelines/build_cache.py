"""Ray job entrypoint for a cache build; same options as ``logitcache build``.

    ray job submit --address http://HEAD:8265 --working-dir . -- \\
        python pipelines/build_cache.py --teacher smollm2-135m --corpus s3://b/corpus/*.jsonl \\
        --out s3://b/caches/smol --workers 4

Inside a Ray job RAY_ADDRESS is set, so the build joins the job's cluster instead of starting
a local one.
"""

from __future__ import annotations

import sys

from logitcache.cli import main as cli_main


def main(argv: list[str] | None = None) -> int:
    """``logitcache build ...``: the same parser, config and error handling as the CLI."""
    return cli_main(["build", *(sys.argv[1:] if argv is None else argv)], prog="build_cache")


if __name__ == "__main__":
    sys.exit(main())
