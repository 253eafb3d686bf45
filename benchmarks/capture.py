"""Capture throughput: full ``build`` vs the teacher's bare forward, same teacher/device/tokens.

    python -m benchmarks.capture [--tokens 6144] [--seq-len 512] [--device cpu|cuda]

1. Plan the rows once (pydoc topics paragraphs, ``--seq-len`` windows, ``--tokens`` cap).
2. Bare forward: the teacher's ``bare_forward(chunked_head=True)`` (the backbone, then the
   output layer in the scorer's position chunks, and nothing else) over exactly the batches the
   build forms, after a warm-up batch; load excluded. It runs before and after the build and
   the two are pooled, so a change of machine load biases neither side. A plain
   ``model(...).logits`` forward (which materialises [B, T, V] logits) is reported beside it.
3. Full build on local Ray (1 teacher actor, encode tasks beside it): tokens/s of the pipeline
   (from the teacher actor being ready to the last commit: scoring, encoding, writing and
   committing; Ray start-up and the teacher load, paid once per build, are reported apart)
   and end to end.

Target (../shared/DESIGN.md): build >= 0.90 x bare on CPU, >= 0.95 x on a GPU. The last stdout
line is one JSON object with the figures and ``targets``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import tempfile
import time

log = logging.getLogger("benchmarks.capture")


def _write_corpus(path: str) -> None:
    """pydoc topics split at blank lines: short documents, so units hold ~--unit-tokens each."""
    from pydoc_data.topics import topics

    with open(path, "w") as fh:
        for key in sorted(topics):
            for para in topics[key].split("\n\n"):
                if para.strip():
                    fh.write(json.dumps({"text": para.strip()}) + "\n")


def load_bare(cfg, units):
    """The teacher, loaded once, and the build's own batches of token ids."""
    from logitcache.capture.corpus_job import teacher_config
    from logitcache.capture.stages import token_batches
    from logitcache.teachers import load_teacher

    teacher = load_teacher(teacher_config(cfg))
    batches = []
    for unit in units:
        rows = [r.input_ids for r in unit.rows]
        batches += [
            [rows[i] for i in idx]
            for idx in token_batches([len(r) for r in rows], cfg.batch_tokens)
        ]
    teacher.bare_forward(batches[0])  # warm-up
    return teacher, batches


def bare_forward(teacher, batches, chunked_head: bool = True) -> dict:
    """Tokens/s of the teacher's forward alone over the build's own batches: with the output
    layer applied in the scorer's position chunks (the capture overhead reference), or as
    plain ``model(ids, mask).logits``."""
    t0 = time.perf_counter()
    tokens = sum(teacher.bare_forward(b, chunked_head=chunked_head) for b in batches)
    elapsed = time.perf_counter() - t0
    return {
        "tokens": tokens,
        "seconds": round(elapsed, 3),
        "tokens_per_s": round(tokens / elapsed, 1),
        "device": str(teacher.device),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--teacher", default="smollm2-135m")
    p.add_argument("--tokens", type=int, default=6144)
    p.add_argument("--seq-len", type=int, default=512)
    p.add_argument("--top-k", type=int, default=64)
    p.add_argument("--unit-tokens", type=int, default=1024)
    p.add_argument("--batch-tokens", type=int, default=2048)
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda if available)")
    p.add_argument("--no-ray", action="store_true", help="measure the in-process build instead")
    args = p.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    import torch

    from logitcache.capture import CaptureConfig, build_cache
    from logitcache.capture.corpus_job import teacher_config
    from logitcache.capture.plan import plan_build
    from logitcache.teachers import load_tokenizer

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    with tempfile.TemporaryDirectory() as tmp:
        corpus = os.path.join(tmp, "pydoc.jsonl")
        _write_corpus(corpus)
        cfg = CaptureConfig(
            teacher=args.teacher,
            corpus=[corpus],
            out=os.path.join(tmp, "cache"),
            top_k=args.top_k,
            seq_len=args.seq_len,
            max_tokens=args.tokens,
            unit_tokens=args.unit_tokens,
            batch_tokens=args.batch_tokens,
            device=device,
            use_ray=not args.no_ray,
            progress="log",
        )
        plan = plan_build(cfg, load_tokenizer(teacher_config(cfg)))
        # The bare forward runs before AND after the build and the two are pooled, so a
        # machine whose load changes during the run biases neither side.
        teacher, batches = load_bare(cfg, plan.units)
        before = bare_forward(teacher, batches)
        log.info("bare forward (before the build): %s", before)
        load_before = os.getloadavg()[0]
        t0 = time.perf_counter()
        manifest = build_cache(cfg)
        wall = time.perf_counter() - t0
        after = bare_forward(teacher, batches)
        log.info("bare forward (after the build): %s", after)
        plain = bare_forward(teacher, batches, chunked_head=False)
        log.info("plain model(...).logits forward: %s", plain)
        bare = {
            "tokens_per_s": round(
                (before["tokens"] + after["tokens"]) / (before["seconds"] + after["seconds"]), 1
            )
        }
    run = manifest.stats["run"]
    steady = run["pipeline_tokens_per_s"]
    ratio = steady / bare["tokens_per_s"]
    target = 0.95 if device.startswith("cuda") else 0.90
    result = {
        "benchmark": "capture",
        "teacher": args.teacher,
        "device": device,
        "ray": not args.no_ray,
        "tokens": manifest.num_tokens,
        "seq_len": args.seq_len,
        "top_k": args.top_k,
        "units": len(manifest.shards),
        "bare_tokens_per_s": bare["tokens_per_s"],
        "bare_tokens_per_s_before_after": [before["tokens_per_s"], after["tokens_per_s"]],
        "plain_logits_forward_tokens_per_s": plain["tokens_per_s"],
        "build_vs_plain_logits_forward": round(steady / plain["tokens_per_s"], 3),
        "load_avg_1m_before_after": [round(load_before, 2), round(os.getloadavg()[0], 2)],
        "build_pipeline_tokens_per_s": steady,
        "build_end_to_end_tokens_per_s": round(manifest.num_tokens / wall, 1),
        "build_wall_s": round(wall, 2),
        "build_first_commit_s": run.get("first_commit_s"),
        "teacher_actor_tokens_per_s": [
            w["tokens_per_s"] for w in manifest.stats["workers"].values()
        ],
        "bytes_per_token": manifest.stats.get("bytes_per_token"),
        "codec": manifest.codec["spec"].split(",ranks=")[0],
        "targets": {
            "build_vs_bare_forward": {
                "value": round(ratio, 3),
                "target": target,
                "op": ">=",
                "unit": "x bare forward tokens/s",
            }
        },
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
