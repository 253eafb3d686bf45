"""``logitcache info CACHE [--json]``."""

from __future__ import annotations

import argparse
import json

from logitcache.cli.common import add_storage_options, human_bytes
from logitcache.format import open_cache


def add_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("cache", help="cache URI (local path, s3://, memory://, ...)")
    p.add_argument("--json", action="store_true", help="print the summary as one JSON object")
    add_storage_options(p)


def summary(cache) -> dict:
    m = cache.manifest
    tokens = m.num_tokens
    return {
        "uri": cache.store.uri,
        "status": m.status,
        "format_version": m.format_version,
        "teacher": m.teacher.get("name"),
        "teacher_revision": m.teacher.get("revision") or m.teacher.get("weights_sha256"),
        "backend": m.teacher.get("backend"),
        "tokenizer": m.tokenizer.get("name"),
        "vocab_size": m.vocab_size,
        "top_k": m.top_k,
        "rs_samples": m.rs_samples,
        "seq_len": m.capture.get("seq_len"),
        "codec": m.codec["spec"],
        "shards": len(m.shards),
        "sequences": m.num_sequences,
        "tokens": tokens,
        "bytes": m.num_bytes,
        "bytes_per_token": round(m.num_bytes / tokens, 2) if tokens else None,
        "corpus_fingerprint": m.corpus.get("fingerprint"),
        "created_at": m.created_at,
    }


def run(args: argparse.Namespace) -> int:
    cache = open_cache(args.cache, args.storage_options)
    s = summary(cache)
    if args.json:
        print(json.dumps(s))
        return 0
    width = max(len(k) for k in s)
    for key, value in s.items():
        if key == "bytes":
            value = f"{value} ({human_bytes(value)})"
        print(f"{key:<{width}}  {value}")
    return 0
