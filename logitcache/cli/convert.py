"""``logitcache convert SRC --from distillkit|axolotl --out CACHE --teacher T [--codec C]``."""

from __future__ import annotations

import argparse
import json

from logitcache.cli.common import add_storage_options


def add_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("src", help="the dataset: a directory of Parquet/JSONL files, or one file")
    p.add_argument("--from", dest="fmt", required=True, choices=["distillkit", "axolotl"])
    p.add_argument("--out", required=True, help="cache URI to write (new, or one to resume)")
    who = p.add_mutually_exclusive_group(required=True)
    who.add_argument("--teacher", help="the model that produced the logits (identity, width)")
    who.add_argument("--tokenizer", help="its tokenizer, when the teacher is not at hand")
    p.add_argument("--codec", default=None, help="cache codec (default lc1; raw is lossless)")
    p.add_argument(
        "--compression-config",
        default=None,
        metavar="YAML",
        help="DistillKit's compression_config.yaml (default: beside the data)",
    )
    add_storage_options(p)


def run(args: argparse.Namespace) -> int:
    from logitcache.convert import convert_to_cache

    manifest = convert_to_cache(
        args.src,
        args.fmt,
        args.out,
        teacher=args.teacher,
        tokenizer=args.tokenizer,
        codec=args.codec,
        compression_config=args.compression_config,
        storage_options=args.storage_options,
    )
    print(
        json.dumps(
            {
                "out": args.out,
                "from": args.fmt,
                "sequences": manifest.num_sequences,
                "tokens": manifest.num_tokens,
                "top_k": manifest.top_k,
                "codec": manifest.codec["spec"],
            }
        )
    )
    return 0
