"""``logitcache build``: capture a teacher's soft labels over a corpus into a cache.

The same parser serves ``pipelines/build_cache.py`` (the Ray job entrypoint), so the CLI and
the job take exactly the same options.
"""

from __future__ import annotations

import argparse
import json

from logitcache.cli.common import add_replica_options, add_storage_options
from logitcache.teachers.config import DTYPES


def add_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--teacher", required=True, help="hub id, local directory, FILE.gguf or smollm2-135m"
    )
    p.add_argument(
        "--corpus",
        required=True,
        nargs="+",
        metavar="URI",
        help="files, globs, directories or fsspec URIs",
    )
    p.add_argument(
        "--out", default=None, help="cache URI (local path, s3://, memory://, ...); or --catalog"
    )
    p.add_argument(
        "--top-k", type=int, default=64, help="top-k entries stored per position (0: draws only)"
    )
    p.add_argument(
        "--rs-samples", type=int, default=0, metavar="N", help="sampled draws per position (RS-KD)"
    )
    p.add_argument("--seq-len", type=int, default=2048, help="tokens per row")
    p.add_argument(
        "--max-tokens",
        type=int,
        default=None,
        metavar="N",
        help="stop after N corpus tokens (deterministic)",
    )
    p.add_argument(
        "--workers",
        type=int,
        default=1,
        help="teacher replicas (each of --gpus-per-teacher GPUs when GPUs exist)",
    )
    add_replica_options(p)
    p.add_argument("--backend", default="transformers", help="transformers (default) or vllm")
    p.add_argument(
        "--text-field", default="text", help="JSONL field / Parquet column holding the text"
    )
    p.add_argument(
        "--format",
        default="auto",
        choices=["auto", "text", "jsonl", "parquet", "chat"],
        help="corpus format (auto: by file suffix)",
    )
    p.add_argument(
        "--invalid-utf8",
        default="skip",
        choices=["skip", "replace"],
        help="a document with invalid UTF-8: skip it (default; counted) or keep it with U+FFFD",
    )
    p.add_argument(
        "--packing",
        default="pack",
        choices=["pack", "document"],
        help="pack documents with EOS between them, or one document per row",
    )
    p.add_argument("--dtype", default="auto", choices=DTYPES, help="teacher compute dtype")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument(
        "--batch-tokens", type=int, default=8192, help="padded tokens per teacher forward"
    )
    p.add_argument(
        "--unit-tokens", type=int, default=65536, help="tokens per work unit (= per shard)"
    )
    p.add_argument(
        "--codec", default=None, help="codec spec, e.g. raw (default: the library default)"
    )
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch threads per CPU worker (default: cores / workers)",
    )
    p.add_argument(
        "--trust-remote-code",
        action="store_true",
        help="allow the teacher repository's own code to run",
    )
    p.add_argument(
        "--revision", default=None, help="hub revision (branch, tag or commit) of the teacher"
    )
    p.add_argument(
        "--ray-address",
        default=None,
        help="Ray cluster address (default: RAY_ADDRESS, else a local Ray)",
    )
    p.add_argument(
        "--no-ray",
        action="store_true",
        help="run in this process without Ray (same stages, no parallelism)",
    )
    p.add_argument(
        "--progress", default="auto", choices=["auto", "bar", "log", "off"], help="progress display"
    )
    p.add_argument(
        "--catalog",
        default=None,
        metavar="ROOT",
        help="shared cache catalog root (e.g. s3://bucket/logitcache): reuse a complete "
        "matching cache, extend it when the corpus grew, or build it under ROOT/caches/<key>",
    )
    p.add_argument(
        "--wait-lease",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="if another builder is writing the same cache, wait this long for it (default: "
        "refuse at once)",
    )
    p.add_argument(
        "--lease-ttl",
        type=float,
        default=120.0,
        metavar="SECONDS",
        help="write lease lifetime; a crashed builder's cache is taken over after this long",
    )
    add_storage_options(p)


def config_from_args(args: argparse.Namespace):
    from logitcache.capture import CaptureConfig

    return CaptureConfig(
        teacher=args.teacher,
        corpus=list(args.corpus),
        out=args.out,
        catalog=args.catalog,
        wait_lease=args.wait_lease,
        lease_ttl=args.lease_ttl,
        top_k=args.top_k,
        rs_samples=args.rs_samples,
        seq_len=args.seq_len,
        max_tokens=args.max_tokens,
        workers=args.workers,
        gpus_per_teacher=args.gpus_per_teacher,
        pipeline_parallel=args.pipeline_parallel,
        backend=args.backend,
        text_field=args.text_field,
        format=args.format,
        invalid_utf8=args.invalid_utf8,
        packing=args.packing,
        dtype=args.dtype,
        device=args.device,
        batch_tokens=args.batch_tokens,
        unit_tokens=args.unit_tokens,
        codec=args.codec,
        threads=args.threads,
        trust_remote_code=args.trust_remote_code,
        revision=args.revision,
        storage_options=args.storage_options,
        use_ray=not args.no_ray,
        ray_address=args.ray_address,
        progress=args.progress,
    )


def run(args: argparse.Namespace) -> int:
    from logitcache.capture import build_cache

    manifest = build_cache(config_from_args(args))
    uri = args.out
    if args.catalog:
        from logitcache.catalog import Catalog, catalog_key

        uri = Catalog.open(args.catalog, args.storage_options).cache_uri(catalog_key(manifest))
    run_stats = manifest.stats.get("run", {})
    print(
        json.dumps(
            {
                "out": uri,
                "sequences": manifest.num_sequences,
                "tokens": manifest.num_tokens,
                "bytes_per_token": manifest.stats.get("bytes_per_token"),
                "tokens_this_run": run_stats.get("tokens"),
                "wall_s": run_stats.get("wall_s"),
                "tokens_per_s": run_stats.get("tokens_per_s"),
            }
        )
    )
    return 0
