"""``logitcache train --cache CACHE --student tiny|small|PATH --out DIR [--loss ...]
[--cross-tokenizer uld|gold] [--steps N | --epochs N] [--resume]``; under torchrun, every rank runs this same command."""

from __future__ import annotations

import argparse
import json
import logging

from logitcache.cli.common import add_storage_options

log = logging.getLogger(__name__)

LOSS_CHOICES = ("kl_tail", "kl_topk", "reverse_kl", "jsd", "rs_kd", "ce")


def add_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("--cache", required=True, help="cache URI (local path, s3://, ...)")
    p.add_argument(
        "--student", default="tiny", help="preset (tiny, small) or a path / hub id (default tiny)"
    )
    p.add_argument("--out", required=True, help="run directory: checkpoint, metrics, student/")
    p.add_argument(
        "--loss", default="kl_tail", choices=LOSS_CHOICES, help="KD loss (default kl_tail)"
    )
    p.add_argument("--temperature", type=float, default=1.0, help="KD temperature (T^2-scaled)")
    p.add_argument(
        "--alpha",
        type=float,
        default=None,
        help="weight of hard-label cross-entropy (default 0; 0.5 with --cross-tokenizer)",
    )
    p.add_argument(
        "--cross-tokenizer",
        default=None,
        choices=("uld", "gold"),
        help="the student (--student DIR) has its own tokenizer: ULD or GOLD-hybrid KD on "
        "aligned positions plus its own CE (docs/cross-tokenizer.md)",
    )
    p.add_argument(
        "--teacher-tokenizer",
        default=None,
        metavar="PATH",
        help="tokenizer that spells the cached ids (default: the manifest's teacher)",
    )
    p.add_argument("--beta", type=float, default=0.5, help="JSD mixture weight (--loss jsd)")
    p.add_argument(
        "--loss-chunk",
        type=int,
        default=None,
        metavar="N",
        help="positions per loss chunk (memory cap)",
    )
    p.add_argument(
        "--loss-impl",
        default="fused",
        choices=("fused", "dense"),
        help="fused: output layer + loss chunk by chunk, no [B, T, V] logits (default); "
        "dense: the model's logits, then the loss",
    )
    length = p.add_mutually_exclusive_group()
    length.add_argument("--steps", type=int, default=None, help="optimizer steps")
    length.add_argument(
        "--epochs", type=int, default=None, help="passes over the train split (default 1)"
    )
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt")
    p.add_argument(
        "--stop-after",
        type=int,
        default=None,
        metavar="N",
        help="checkpoint and stop after N steps of this run",
    )
    p.add_argument("--lr", type=float, default=1e-3, help="peak learning rate (AdamW)")
    p.add_argument("--warmup", type=int, default=50, help="linear warmup steps, then cosine decay")
    p.add_argument("--weight-decay", type=float, default=0.1)
    p.add_argument("--batch-size", type=int, default=8, help="sequences per micro-batch per rank")
    p.add_argument("--grad-accum", type=int, default=1, help="micro-batches per optimizer step")
    p.add_argument(
        "--crop-len",
        "--seq-len",  # its old name; it is a crop, not the cache's row length
        dest="crop_len",
        type=int,
        default=None,
        metavar="N",
        help="crop cached rows to their first N positions (default: whole rows)",
    )
    p.add_argument(
        "--eval-every", type=int, default=100, help="evaluate on the held-out split every N steps"
    )
    p.add_argument("--eval-batches", type=int, default=50, help="held-out batches per evaluation")
    p.add_argument("--checkpoint-every", type=int, default=None, help="default: --eval-every")
    p.add_argument("--heldout-fraction", type=float, default=0.05)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--num-workers", type=int, default=1, help="DataLoader workers per rank")
    add_storage_options(p)


def config_from_args(args: argparse.Namespace):
    from logitcache.losses import LossConfig
    from logitcache.train import TrainConfig

    return TrainConfig(
        cache=args.cache,
        student=args.student,
        out=args.out,
        loss=LossConfig(
            kind=args.loss,
            temperature=args.temperature,
            alpha=args.alpha if args.alpha is not None else (0.5 if args.cross_tokenizer else 0.0),
            beta=args.beta,
            chunk_size=args.loss_chunk,
            impl=args.loss_impl,
        ),
        steps=args.steps,
        epochs=args.epochs,
        resume=args.resume,
        stop_after=args.stop_after,
        lr=args.lr,
        warmup=args.warmup,
        weight_decay=args.weight_decay,
        batch_size=args.batch_size,
        grad_accum=args.grad_accum,
        max_seq_len=args.crop_len,
        eval_every=args.eval_every,
        eval_batches=args.eval_batches,
        checkpoint_every=args.checkpoint_every,
        heldout_fraction=args.heldout_fraction,
        seed=args.seed,
        device=args.device,
        num_workers=args.num_workers,
        storage_options=args.storage_options,
        cross_tokenizer=args.cross_tokenizer,
        teacher_tokenizer=args.teacher_tokenizer,
    )


def run(args: argparse.Namespace) -> int:
    from logitcache.train import train

    result = train(config_from_args(args))
    print(json.dumps(result))
    return 0
