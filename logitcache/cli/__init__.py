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

log = logging.getLogger("logitcache.cli")

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


# Arguments naming the data a command works on, in the order a storage error is blamed on them.
_URI_ARGS = ("cache", "out", "catalog", "root", "prompts", "corpus")


def _uri_of(args: argparse.Namespace) -> str:
    from logitcache.storage import redact_uri

    for name in _URI_ARGS:
        value = getattr(args, name, None)
        if isinstance(value, (list, tuple)):
            value = value[0] if value else None
        if value:
            return redact_uri(str(value))
    return "storage"


def main(argv: list[str] | None = None, *, prog: str = "logitcache") -> int:
    """Run one command; errors become one line on stderr and exit status 2.

    ``pipelines/*.py`` (Ray job entrypoints) call this too, with ``prog`` set to their name,
    so a job fails exactly as the CLI does.
    """
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
    from logitcache.storage.failures import explain_storage_failure

    where = f"{prog} {args.command}"
    try:
        return int(importlib.import_module(args._module).run(args) or 0)
    except LogitCacheError as exc:
        reason = explain_storage_failure(exc)
        extra = f" ({reason})" if reason and reason not in str(exc) else ""
        print(f"{where}: error: {exc}{extra}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{where}: interrupted; committed work is kept, re-run to resume", file=sys.stderr)
        return 130
    except Exception as exc:
        # Storage failures that reach us raw (botocore, aiohttp): one line naming the URI and
        # the likely fix. Anything else is a bug: keep its traceback.
        reason = explain_storage_failure(exc)
        if reason is None:
            raise
        log.debug("storage failure", exc_info=True)
        print(f"{where}: error: {_uri_of(args)}: {reason}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
