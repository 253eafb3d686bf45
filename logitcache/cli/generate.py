"""``logitcache generate``: the teacher writes responses to prompts; the cache keeps them with
the teacher's soft labels on every position and the loss on response tokens.

The same parser serves ``pipelines/generate_dataset.py`` (the Ray job entrypoint).
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
        "--prompts",
        required=True,
        nargs="+",
        metavar="URI",
        help="JSONL of {'prompt': str} or {'messages': [...]} records (globs, fsspec URIs)",
    )
    p.add_argument("--out", required=True, help="cache URI (local path, s3://, memory://, ...)")
    p.add_argument("--max-new-tokens", type=int, default=256, help="response length limit")
    p.add_argument(
        "--temperature", type=float, default=1.0, help="sampling temperature (0: greedy)"
    )
    p.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling mass (1: off)")
    p.add_argument("--n", type=int, default=1, metavar="PER_PROMPT", help="responses per prompt")
    p.add_argument("--seed", type=int, default=0, help="sampling seed (same seed, same dataset)")
    p.add_argument("--top-k", type=int, default=64, help="top-k entries stored per position")
    p.add_argument(
        "--rs-samples", type=int, default=0, metavar="N", help="sampled draws per position (RS-KD)"
    )
    p.add_argument(
        "--max-prompt-tokens", type=int, default=1024, help="longer prompts are skipped (logged)"
    )
    p.add_argument("--prompts-per-unit", type=int, default=64, help="prompts per work unit/shard")
    p.add_argument(
        "--workers",
        type=int,
        default=1,
        help="teacher replicas (Ray actors, each of --gpus-per-teacher GPUs)",
    )
    add_replica_options(p)
    p.add_argument("--backend", default="transformers", help="transformers (default) or vllm")
    p.add_argument("--dtype", default="auto", choices=DTYPES, help="teacher compute dtype")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument(
        "--batch-tokens", type=int, default=8192, help="prompt+response tokens per teacher batch"
    )
    p.add_argument("--codec", default=None, help="codec spec, e.g. raw (default: library default)")
    p.add_argument("--threads", type=int, default=None, help="torch threads per CPU worker")
    p.add_argument("--trust-remote-code", action="store_true", help="allow the teacher's own code")
    p.add_argument("--revision", default=None, help="hub revision of the teacher")
    p.add_argument("--ray-address", default=None, help="Ray cluster address (default: local)")
    p.add_argument("--no-ray", action="store_true", help="run in this process without Ray")
    p.add_argument(
        "--progress", default="auto", choices=["auto", "bar", "log", "off"], help="progress display"
    )
    p.add_argument(
        "--export-jsonl", default=None, metavar="PATH", help="also write prompt/response JSONL here"
    )
    add_storage_options(p)


def config_from_args(args: argparse.Namespace):
    from logitcache.generate import GenerateConfig, GenerationParams

    return GenerateConfig(
        teacher=args.teacher,
        prompts=list(args.prompts),
        out=args.out,
        generation=GenerationParams(
            max_new_tokens=args.max_new_tokens,
            temperature=args.temperature,
            top_p=args.top_p,
            n=args.n,
            seed=args.seed,
        ),
        top_k=args.top_k,
        rs_samples=args.rs_samples,
        max_prompt_tokens=args.max_prompt_tokens,
        prompts_per_unit=args.prompts_per_unit,
        workers=args.workers,
        gpus_per_teacher=args.gpus_per_teacher,
        pipeline_parallel=args.pipeline_parallel,
        backend=args.backend,
        dtype=args.dtype,
        device=args.device,
        batch_tokens=args.batch_tokens,
        codec=args.codec,
        threads=args.threads,
        trust_remote_code=args.trust_remote_code,
        revision=args.revision,
        storage_options=args.storage_options,
        use_ray=not args.no_ray,
        ray_address=args.ray_address,
        progress=args.progress,
        export_jsonl=args.export_jsonl,
    )


def run(args: argparse.Namespace) -> int:
    from logitcache.generate import generate_dataset

    manifest = generate_dataset(config_from_args(args))
    run_stats = manifest.stats.get("run", {})
    print(
        json.dumps(
            {
                "out": args.out,
                "samples": manifest.num_sequences,
                "tokens": manifest.num_tokens,
                "bytes_per_token": manifest.stats.get("bytes_per_token"),
                "tokens_this_run": run_stats.get("tokens"),
                "wall_s": run_stats.get("wall_s"),
                "export_jsonl": args.export_jsonl,
            }
        )
    )
    return 0
