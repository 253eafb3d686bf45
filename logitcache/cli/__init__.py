"""The ``logitcache`` command. One module per subcommand, each with ``add_parser`` and ``run``.

Modules are imported only when their command runs, so ``logitcache info`` does not pay for
importing torch or Ray.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from logitcache import __version__
from logitcache.errors import LogitCacheError

# Loggers whose DEBUG output carries credentials (request headers, session tokens).
QUIET_LOGGERS = ("botocore", "aiobotocore", "boto3", "s3transfer")

# command name -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "build": ("logitcache.cli.build", "capture a teacher's soft labels over a corpus into a cache"),
    "generate": ("logitcache.cli.generate", "cache teacher-written responses with soft labels"),
    "info": ("logitcache.cli.info", "summarise a cache: teacher, tokenizer, k, size, codec"),
    "verify": ("logitcache.cli.verify", "check every shard against its checksum, schema and rows"),
    "train": ("logitcache.cli.train", "train a student from a cache with sparse KD losses"),
    "catalog": ("logitcache.cli.catalog", "list and find shared caches under a catalog root"),
    "submit": ("logitcache.cli.submit", "run a logitcache command as a Ray job on a cluster"),
    "jobs": ("logitcache.cli.jobs", "status, logs or stop of a submitted Ray job"),
    "convert": ("logitcache.cli.convert", "convert a DistillKit or Axolotl dataset into a cache"),
    "export": ("logitcache.cli.export", "export a cache as a DistillKit or Axolotl dataset"),
}


def build_parser(commands: dict[str, tuple[str, str]] | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="logitcache",
        description="Cache an LLM teacher's soft labels once; distil students from them many times.",
    )
    parser.add_argument("--version", action="version", version=f"logitcache {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (module, help_) in (commands or COMMANDS).items():
        p = sub.add_parser(name, help=help_, description=help_)
        importlib.import_module(module).add_parser(p)
        p.set_defaults(_module=module)
    return parser


def _parser_for(argv: list[str]) -> argparse.ArgumentParser:
    """Import only the chosen subcommand's module when the command is known."""
    chosen = next((a for a in argv if not a.startswith("-")), None)
    if chosen in COMMANDS and "-h" not in argv and "--help" not in argv:
        return build_parser({chosen: COMMANDS[chosen]})
    return build_parser()


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = _parser_for(argv).parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    # botocore's DEBUG lines print request headers, session tokens included: `-v` means
    # logitcache's own debug lines, never the credentials of the storage client.
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.INFO)
    try:
        return int(importlib.import_module(args._module).run(args) or 0)
    except LogitCacheError as exc:
        print(f"logitcache {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(
            f"logitcache {args.command}: interrupted; committed work is kept, re-run to resume",
            file=sys.stderr,
        )
        return 130


if __name__ == "__main__":
    sys.exit(main())
