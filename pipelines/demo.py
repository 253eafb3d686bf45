"""``make demo``: the whole product on one CPU machine, end to end, in a few minutes.

1. Write a small corpus (Python's own documentation, ``pydoc_data.topics``) as JSONL.
2. Build a cache of the real SmolLM2-135M teacher's top-64 soft labels on a local Ray runtime.
3. Verify the cache and print its summary.
4. Train a tiny student from the cache (sparse KL with the tail bucket) and evaluate it on the
   held-out split.
5. Print a report: cache size and fidelity-relevant facts, build throughput, and the student's
   held-out KL to the teacher, cross-entropy and top-1 agreement before and after training.

Everything lands under ``demo-out/`` (override with ``LOGITCACHE_DEMO_DIR``); re-running resumes
the build (nothing is recomputed) and retrains the student.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from pathlib import Path

from logitcache.capture import CaptureConfig, build_cache
from logitcache.capture.options import (
    LabelOptions,
    OutputOptions,
    PackingOptions,
    RunOptions,
    TeacherOptions,
)
from logitcache.cli.info import summary
from logitcache.format import open_cache, verify_cache
from logitcache.losses import LossConfig
from logitcache.train import TrainConfig, train
from logitcache.train.metrics import read_metrics

log = logging.getLogger("logitcache.demo")

TOKENS = int(os.environ.get("LOGITCACHE_DEMO_TOKENS", "16384"))
# The fused output layer + loss (docs/training.md) makes a step of the tiny student about 3x
# cheaper than the dense loss did, so the same few minutes now buy enough steps to learn more
# than the teacher's unigram statistics.
STEPS = int(os.environ.get("LOGITCACHE_DEMO_STEPS", "240"))
HELDOUT = 0.1


def write_corpus(path: Path) -> Path:
    """Each pydoc topic becomes one JSONL document, in a fixed order."""
    from pydoc_data.topics import topics

    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as fh:
        for name in sorted(topics):
            fh.write(json.dumps({"id": name, "text": topics[name]}) + "\n")
    return path


def most_frequent_top1_share(cache_uri: str) -> float:
    """Held-out agreement of the best constant guess: the share of the teacher's most frequent
    top-1 id. A student below it has learnt only unigram statistics."""
    import torch

    from logitcache.data import CacheDataset, make_dataloader
    from logitcache.train.evaluate import teacher_argmax
    from logitcache.train.heldout import effective_heldout_fraction

    fraction = effective_heldout_fraction(open_cache(cache_uri), HELDOUT)  # as the trainer does
    ds = CacheDataset(cache_uri, split="heldout", shuffle=False, heldout_fraction=fraction)
    tops = []
    for batch in make_dataloader(ds, batch_size=8, num_workers=0):
        mask = batch["labels"] != -100
        tops.append(teacher_argmax(batch, mask))
    if not tops:
        return float("nan")
    top = torch.cat(tops)
    return float(top.bincount().max()) / max(1, top.numel())


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    out = Path(os.environ.get("LOGITCACHE_DEMO_DIR", "demo-out"))
    corpus = write_corpus(out / "corpus" / "pydoc.jsonl")

    t0 = time.perf_counter()
    manifest = build_cache(
        CaptureConfig(
            teacher=TeacherOptions(model="smollm2-135m"),
            labels=LabelOptions(top_k=64),
            corpus=[str(corpus)],
            packing=PackingOptions(seq_len=256, max_tokens=TOKENS, unit_tokens=4096),
            run=RunOptions(workers=1),
            output=OutputOptions(out=str(out / "cache")),
        )
    )
    build_s = time.perf_counter() - t0

    cache = open_cache(str(out / "cache"))
    report = verify_cache(cache)
    if not report.ok:
        raise SystemExit(f"demo cache failed verification: {[str(p) for p in report.problems]}")
    info = summary(cache)

    run_dir = out / "student"
    shutil.rmtree(run_dir, ignore_errors=True)
    t1 = time.perf_counter()
    final = train(
        TrainConfig(
            cache=str(out / "cache"),
            student="tiny",
            out=str(run_dir),
            loss=LossConfig(kind="kl_tail"),
            steps=STEPS,
            lr=3e-3,
            warmup=20,
            batch_size=8,
            eval_every=max(1, STEPS // 4),
            heldout_fraction=HELDOUT,
            num_workers=0,
        )
    )
    train_s = time.perf_counter() - t1
    modal_share = most_frequent_top1_share(str(out / "cache"))
    evals = [r for r in read_metrics(str(run_dir / "metrics.jsonl")) if r.get("split") == "eval"]

    print("\n=== logitcache demo report ===")
    print(
        f"teacher            {info['teacher']} ({info['backend']}, {manifest.teacher.get('dtype')})"
    )
    print(f"cache              {info['uri']}  [{info['status']}, verified]")
    print(
        f"contents           {info['sequences']} sequences, {info['tokens']} tokens, "
        f"top-{info['top_k']}, codec {info['codec'].split(',ranks=')[0]}"
    )
    print(f"size               {info['bytes']} bytes = {info['bytes_per_token']} bytes/token")
    print(
        f"build              {build_s:.1f} s wall (teacher load, Ray start-up and calibration included)"
    )
    run = manifest.stats.get("run", {})
    if run.get("pipeline_tokens_per_s"):
        print(f"teacher pipeline   {run['pipeline_tokens_per_s']} tokens/s")
    print(f"student training   {final['step']} steps in {train_s:.1f} s")
    if evals:
        first, last = evals[0], evals[-1]
        names = {
            "eval_kl": "KL(teacher || student)",
            "eval_ce": "cross-entropy (true tokens)",
            "eval_top1": "top-1 agreement with teacher",
        }
        print(
            f"held-out ({last.get('eval_tokens', '?')} tokens)   step {first['step']}  ->  step {last['step']}"
        )
        for key, name in names.items():
            if key in first and key in last:
                print(f"  {name:<30} {first[key]:.4f}  ->  {last[key]:.4f}")
        if "eval_top1" in last:
            verdict = "above" if last["eval_top1"] > modal_share else "NOT above"
            print(
                f"  {'most frequent teacher top-1':<30} {modal_share:.4f}  (a constant "
                f"prediction's agreement; the student is {verdict} it)"
            )
    print(f"student saved to   {run_dir / 'student'} (safetensors; loads with transformers)")
    print(f"metrics            {run_dir / 'metrics.jsonl'} and {run_dir / 'metrics.png'}")


if __name__ == "__main__":
    main()
