"""``logitcache catalog ls ROOT | find ROOT ... | reindex ROOT``: browse shared caches."""

from __future__ import annotations

import argparse
import json
import logging

from logitcache.cli.common import add_storage_options, human_bytes
from logitcache.errors import ConfigError

log = logging.getLogger(__name__)

COLUMNS = ("key", "teacher", "corpus", "k", "tokens", "size", "status", "created")


def add_parser(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="catalog_command", metavar="ACTION", required=True)
    ls = sub.add_parser("ls", help="list the caches in a catalog")
    ls.add_argument("root", help="catalog root URI, e.g. s3://bucket/logitcache")
    ls.add_argument("--json", action="store_true", help="one JSON object per line")
    add_storage_options(ls)

    find = sub.add_parser("find", help="caches matching a teacher, corpus and capture settings")
    find.add_argument("root", help="catalog root URI")
    find.add_argument("--teacher", help="teacher name, hub id or path as given to build")
    find.add_argument(
        "--corpus",
        nargs="+",
        default=None,
        metavar="URI",
        help="corpus files/globs: match caches built from exactly this content (reads and "
        "tokenizes it with the --teacher's tokenizer; no teacher forward)",
    )
    find.add_argument("--top-k", type=int, default=None)
    find.add_argument("--rs-samples", type=int, default=None)
    find.add_argument("--seq-len", type=int, default=None)
    find.add_argument("--key", default=None, help="an exact catalog key")
    find.add_argument("--complete", action="store_true", help="only complete caches")
    find.add_argument("--json", action="store_true", help="one JSON object per line")
    add_storage_options(find)

    re = sub.add_parser("reindex", help="rebuild ROOT/index from the caches' manifests")
    re.add_argument("root", help="catalog root URI")
    add_storage_options(re)


def _row(e: dict) -> dict[str, str]:
    k = e.get("top_k", 0)
    rs = e.get("rs_samples", 0)
    return {
        "key": e["key"][:12],
        "teacher": str(e.get("teacher")),
        "corpus": str(e.get("corpus")),
        "k": f"{k}" + (f"+rs{rs}" if rs else ""),
        "tokens": f"{e.get('tokens', 0):,}",
        "size": human_bytes(e.get("bytes", 0)),
        "status": str(e.get("status")),
        "created": str(e.get("created_at", ""))[:19],
    }


def print_table(entries: list[dict], as_json: bool) -> None:
    if as_json:
        for e in entries:
            print(json.dumps(e, sort_keys=True))
        return
    rows = [_row(e) for e in entries]
    widths = {c: max([len(c)] + [len(r[c]) for r in rows]) for c in COLUMNS}
    print("  ".join(c.upper().ljust(widths[c]) for c in COLUMNS).rstrip())
    for r in rows:
        print("  ".join(r[c].ljust(widths[c]) for c in COLUMNS).rstrip())


def run(args: argparse.Namespace) -> int:
    from logitcache.catalog import Catalog

    catalog = Catalog.open(args.root, args.storage_options)
    if args.catalog_command == "ls":
        print_table(catalog.entries(), args.json)
        return 0
    if args.catalog_command == "reindex":
        entries = catalog.reindex()
        print(f"indexed {len(entries)} cache(s) under {catalog.root.uri}")
        return 0
    matches = catalog.find(
        teacher=args.teacher,
        key=args.key,
        top_k=args.top_k,
        rs_samples=args.rs_samples,
        seq_len=args.seq_len,
        complete_only=args.complete,
    )
    if args.corpus:
        if not args.teacher:
            raise ConfigError(
                "--corpus needs --teacher: the corpus is matched by its tokenised content"
            )
        from logitcache.catalog.match import filter_by_corpus

        matches = filter_by_corpus(
            matches, args.corpus, teacher=args.teacher, storage_options=args.storage_options
        )
    print_table(matches, args.json)
    return 0 if matches else 1
