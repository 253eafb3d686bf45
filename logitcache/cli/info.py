"""``logitcache info CACHE [--json]``: a summary to read; ``--json`` keeps everything.

The text form names the codec by name and parameters; a fitted rank table (kilobytes of
base64 inside lc1's spec) appears as its size and hash. ``--json`` prints the full codec
section and spec, for scripts.
"""

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
        "codec_params": dict(m.codec),
        "shards": len(m.shards),
        "sequences": m.num_sequences,
        "tokens": tokens,
        "bytes": m.num_bytes,
        "bytes_per_token": round(m.num_bytes / tokens, 2) if tokens else None,
        "corpus_fingerprint": m.corpus.get("fingerprint"),
        "created_at": m.created_at,
        "manifest_checksum": m.integrity,
    }


def codec_summary(spec: str) -> str:
    """``name(key=value, ...)``, with a rank table shown as its id count, size and hash."""
    from logitcache.codecs import get_codec

    codec = get_codec(spec)
    params = {k: v for k, v in codec.params.items() if k != "ranks"}
    text = codec.name + ("(" + ", ".join(f"{k}={v}" for k, v in params.items()) + ")")
    ranks = str(codec.params.get("ranks") or "")
    if ranks and ranks != "id":
        d = codec.describe()
        text += (
            f"; rank table: {d.get('ranks_listed')} ids, {human_bytes(len(ranks))} in the spec, "
            f"sha256 {str(d.get('ranks_sha256'))[:12]}"
        )
    return text


def run(args: argparse.Namespace) -> int:
    cache = open_cache(args.cache, args.storage_options)
    s = summary(cache)
    if args.json:
        print(json.dumps(s))
        return 0
    s["codec"] = codec_summary(s.pop("codec_params")["spec"])
    width = max(len(k) for k in s)
    for key, value in s.items():
        if key == "bytes":
            value = f"{value} ({human_bytes(value)})"
        print(f"{key:<{width}}  {value}")
    return 0
