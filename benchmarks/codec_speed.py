"""Codec speed: Parquet read, decode and encode throughput of one realistic in-memory shard.

``python -m benchmarks.codec_speed [--tokens 1048576] [--k 64] [--reps 5] [--codecs raw,lc1]``

Content: synthetic heavy-tailed distributions over V = 49,152 (per position a power law with a
random exponent over distinct Zipf-like ids; lc1 packs them to ~93 codec B/token at k=64, close
to the ~104 it needs for the real SmolLM2 distributions of ``benchmarks.storage``). ``--real``
re-uses those 8,192 real positions (cached in ``.bench-cache/``) in random permutations instead;
Parquet's pages are large enough for zstd to find the repeats, so that file is unrealistically
small and its read time optimistic. Rows of ``--seq-len`` positions; one shard written the way
``logitcache.format`` writes shards (zstd 3, row groups of ~256K positions).

Timed, each ``--reps`` times, best (minimum) reported, as tokens (positions) per second:
``read`` = ``pyarrow.parquet.read_table`` of the shard bytes; ``decode`` = the codec's
``decode`` of the whole table (top-k arrays ready); ``decode_table`` = that plus the plain
columns and the split into per-sample dicts (what a loader gets); ``read_decode`` = read then
``decode_table``; ``encode`` = the codec's ``encode``; ``encode_table`` = per-sample dicts to
Parquet bytes. Wall time is what counts; process CPU time is reported too, because the
machine is shared and the load average (before and after) says how much that distorts wall
time. Last stdout line: one JSON object with a ``targets`` entry.
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import os
import platform
import time

import numpy as np
import pyarrow.parquet as pq

from benchmarks._teacher_dists import cached
from logitcache.codecs import CodecContext, PayloadBatch, get_codec
from logitcache.format.shard import (
    decode_table,
    encode_table,
    samples_to_batch,
    table_to_parquet_bytes,
)

VOCAB = 49152
REAL_POSITIONS = 8192
log = logging.getLogger("benchmarks.codec_speed")


# -- content -----------------------------------------------------------------------------------
def synthetic(n: int, k: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per position: distinct ids (Zipf-like ranks scattered by a fixed permutation) and a
    power law over the top-k with a random exponent; tail = the mass the power law leaves."""
    rng = np.random.default_rng(seed)
    gaps = 1 + rng.geometric(0.05, size=(n, k))
    ranks = np.minimum(np.cumsum(gaps, axis=1) - 1, VOCAB - 1)
    ranks = np.maximum.accumulate(ranks - np.arange(k), axis=1) + np.arange(k)  # distinct
    ranks = np.minimum(ranks, VOCAB - 1 - (k - 1 - np.arange(k)))
    ids = rng.permutation(VOCAB)[ranks].astype(np.int32)
    alpha = rng.uniform(0.6, 3.0, size=(n, 1))
    logits = -alpha * np.log1p(np.arange(k))[None, :] + 0.05 * rng.standard_normal((n, k))
    logits.sort(axis=1)
    logits = logits[:, ::-1]
    tail_logit = -alpha[:, 0] * np.log(k + 1.0) + np.log(VOCAB - k) * 0.5
    z = np.logaddexp(np.logaddexp.reduce(logits, axis=1), tail_logit)
    return ids, (logits - z[:, None]).astype(np.float32), (tail_logit - z).astype(np.float32)


def content(n: int, k: int, real: bool) -> tuple[str, tuple]:
    d = cached(REAL_POSITIONS) if real else None
    if d is None:
        if real:
            log.warning("no cached teacher output (run benchmarks.storage once); synthetic")
        return f"synthetic power laws, V={VOCAB}", synthetic(n, k)
    ids, lps, tail = d.topk(k)
    rng = np.random.default_rng(0)
    blocks = -(-n // d.positions)
    idx = np.concatenate([rng.permutation(d.positions) for _ in range(blocks)])[:n]
    src = "SmolLM2-135M-Instruct on pydoc_data.topics (8,192 positions, permuted)"
    return src, (ids[idx], lps[idx].astype(np.float32), tail[idx].astype(np.float32))


def make_samples(arrays, seq_len: int) -> list[dict]:
    ids, lps, tail = arrays
    rng = np.random.default_rng(1)
    out = []
    for r, a in enumerate(range(0, len(ids), seq_len)):
        b = min(a + seq_len, len(ids))
        out.append(
            {
                "sample_id": f"row-{r}",
                "input_ids": rng.integers(0, VOCAB, b - a).astype(np.int32),
                "loss_mask": np.ones(b - a, bool),
                "topk_ids": ids[a:b],
                "topk_logprobs": lps[a:b],
                "tail_logmass": tail[a:b],
            }
        )
    return out


# -- timing ------------------------------------------------------------------------------------
def best_of(reps: int, fn) -> tuple[float, float, object]:
    """(min wall seconds, min CPU seconds, last result) over ``reps`` calls."""
    wall, cpu, result = float("inf"), float("inf"), None
    for _ in range(reps):
        result = None  # free the previous result before the next run
        t0, c0 = time.perf_counter(), time.process_time()
        result = fn()
        wall = min(wall, time.perf_counter() - t0)
        cpu = min(cpu, time.process_time() - c0)
    return wall, cpu, result


def measure(spec: str, samples: list[dict], k: int, reps: int) -> dict:
    ctx = CodecContext(vocab_size=VOCAB, top_k=k, rs_samples=0)
    codec = get_codec(spec).calibrate(samples[:2], ctx)
    tokens = sum(len(s["input_ids"]) for s in samples)
    batch: PayloadBatch = samples_to_batch(samples, ctx)
    codec.decode(codec.encode(batch, ctx), batch.lengths, ctx)  # warm-up (JIT, allocators)
    data = table_to_parquet_bytes(encode_table(samples, codec, ctx))
    cols = [f.name for f in codec.fields(ctx)]
    figures: dict = {"spec": codec.spec[:40], "file_bytes_per_token": len(data) / tokens}

    def read():
        return pq.read_table(io.BytesIO(data))

    table = read()
    codec_cols = {c: table.column(c) for c in cols}
    lengths = table.column("num_tokens").to_numpy().astype(np.int64)
    timings = {
        "read": read,
        "decode": lambda: codec.decode(codec_cols, lengths, ctx),
        "decode_table": lambda: list(decode_table(table, codec, ctx)),
        "read_decode": lambda: list(decode_table(read(), codec, ctx)),
        "encode": lambda: codec.encode(batch, ctx),
        "encode_table": lambda: table_to_parquet_bytes(encode_table(samples, codec, ctx)),
    }
    for name, fn in timings.items():
        wall, cpu, _ = best_of(reps, fn)
        figures[f"{name}_tok_s"] = tokens / wall
        figures[f"{name}_tok_cpu_s"] = tokens / cpu
    # the decoded payload is the encoded one (within the codec's bound): a cheap sanity check
    out = codec.decode(codec_cols, lengths, ctx)
    if not np.array_equal(out.topk_ids[:, 0], batch.topk_ids[:, 0]):
        raise RuntimeError(f"{spec}: decoded argmax differs from the input")
    return figures


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokens", type=int, default=1 << 20)
    ap.add_argument("--k", type=int, default=64)
    ap.add_argument("--seq-len", type=int, default=2048)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--codecs", default="raw,lc1")
    ap.add_argument("--real", action="store_true", help="permuted real positions (see above)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    load_before = os.getloadavg()
    source, arrays = content(args.tokens, args.k, args.real)
    samples = make_samples(arrays, args.seq_len)
    results = {spec: measure(spec, samples, args.k, args.reps) for spec in args.codecs.split(",")}
    lc1 = results.get("lc1") or next(iter(results.values()))
    out = {
        "benchmark": "codec_speed",
        "machine": f"{platform.machine()} cpus={len(os.sched_getaffinity(0))}",
        "content": source,
        "tokens": args.tokens,
        "k": args.k,
        "seq_len": args.seq_len,
        "reps": args.reps,
        "loadavg_before": [round(x, 2) for x in load_before],
        "loadavg_after": [round(x, 2) for x in os.getloadavg()],
        "results": results,
        "targets": {
            "decode_k64_tokens_per_s": _t(lc1["decode_tok_s"], 2e6, ">=", "tokens/s"),
            "read_decode_k64_tokens_per_s": _t(lc1["read_decode_tok_s"], 1e6, ">=", "tokens/s"),
        },
    }
    _print_table(out)
    print(json.dumps(out, default=float))
    return out


def _t(value, target, op, unit):
    return {"value": float(value), "target": target, "op": op, "unit": unit}


def _print_table(out) -> None:
    names = ["read", "decode", "decode_table", "read_decode", "encode", "encode_table"]
    print("| codec | file B/tok | " + " | ".join(f"{n} Mtok/s" for n in names) + " |")
    print("|---|---|" + "---|" * len(names))
    for spec, r in out["results"].items():
        cells = " | ".join(
            f"{r[f'{n}_tok_s'] / 1e6:.2f} ({r[f'{n}_tok_cpu_s'] / 1e6:.2f} cpu)" for n in names
        )
        print(f"| {spec} | {r['file_bytes_per_token']:.1f} | {cells} |")


if __name__ == "__main__":
    main()
