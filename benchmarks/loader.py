"""Loader benchmark: decoded tokens/s through CacheDataset, local disk and S3 (moto).

``python -m benchmarks.loader [--tokens 1048576] [--ks 64,128] [--s3-fraction 0.5]``

Content: *synthetic* teacher distributions shaped like an LM's (per position a power law over
ranks with a random exponent, so the top-1 probability and the tail mass vary widely; ids
distinct per position, drawn Zipf-like over SmolLM2's 49,152-token vocabulary and scattered by a
fixed permutation). Rows of 2,048 positions, 8 shards. Written with the *default* codec
(``logitcache.codecs.DEFAULT_CODEC``) and with ``raw``.

Figures (tokens = positions; "decoded" = per-sample numpy top-k arrays ready):
- ``dataset``: ``CacheDataset`` in one process, default shuffle (row groups + buffer);
- ``collate``: the same plus :func:`collate` into padded torch tensors, batches of 8 rows;
- ``s3``: ``CacheDataset`` against a moto S3 server on 127.0.0.1 (ranged reads, prefetch);
- ``baseline``: plain ``pyarrow.parquet.read_table`` of a uint16-id + fp16-log-prob Parquet
  (list columns, zstd) of the same content, flattened into ``[N, k]`` numpy arrays.
Last stdout line: one JSON object with a ``targets`` entry (../shared/DESIGN.md).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from logitcache.codecs import DEFAULT_CODEC, CodecContext, available, get_codec
from logitcache.data import CacheDataset, collate, make_dataloader
from logitcache.format import CacheWriter, Manifest, write_shard
from logitcache.format.shard import encode_table

VOCAB = 49152
SEQ = 2048
SHARDS = 8
TARGET_TOK_S = 1_000_000
log = logging.getLogger("benchmarks.loader")


# -- synthetic content ---------------------------------------------------------------------
def _zipfish(rng: np.random.Generator, shape, high: int) -> np.ndarray:
    """Log-uniform ranks in [0, high): P(rank) ~ 1/rank, like word frequencies (fast to draw)."""
    return np.minimum(np.exp(rng.random(shape) * np.log(high)).astype(np.int64) - 1, high - 1)


def _distinct_ranks(rng: np.random.Generator, n: int, k: int) -> np.ndarray:
    """[n, k] distinct Zipf-ish vocabulary ranks per row, in random order."""
    raw = _zipfish(rng, (n, k), VOCAB - k)
    raw.sort(axis=1)
    # Strictly increasing per row (distinct) while keeping the Zipf shape.
    ranks = np.maximum.accumulate(raw - np.arange(k), axis=1) + np.arange(k)
    order = np.argsort(rng.random((n, k)) + np.arange(k) * 0.02, axis=1)  # mostly frequent first
    return np.take_along_axis(ranks, order, axis=1)


def _logprobs(rng: np.random.Generator, n: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Sorted top-k log-probs and the tail log-mass of a power law with random exponent."""
    alphas = np.linspace(0.8, 2.6, 64)
    r = np.arange(1, VOCAB + 1, dtype=np.float64)
    table = np.stack([r**-a for a in alphas])
    total = table.sum(axis=1)
    tail = table[:, k:].sum(axis=1) / total
    which = rng.integers(0, len(alphas), size=n)
    top = np.log(table[which, :k] / total[which, None])
    top += rng.normal(0, 0.25, size=(n, k))
    top = -np.sort(-top, axis=1)
    # Renormalise so top-k mass + tail mass = 1 exactly.
    mass = np.exp(top).sum(axis=1)
    top += (np.log1p(-tail[which]) - np.log(mass))[:, None]
    return top.astype(np.float32), np.log(tail[which]).astype(np.float32)


def make_shard_samples(seed: int, rows: int, k: int) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    perm = np.random.default_rng(12345).permutation(VOCAB)
    n = rows * SEQ
    ids = perm[_distinct_ranks(rng, n, k)].astype(np.int32)
    lps, tail = _logprobs(rng, n, k)
    inputs = perm[_zipfish(rng, n, VOCAB)].astype(np.int32)
    out = []
    for i in range(rows):
        a, b = i * SEQ, (i + 1) * SEQ
        mask = np.ones(SEQ, bool)
        mask[-1] = False
        out.append(
            {
                "sample_id": f"s{seed}-{i:05d}",
                "input_ids": inputs[a:b],
                "loss_mask": mask,
                "topk_ids": ids[a:b],
                "topk_logprobs": lps[a:b],
                "tail_logmass": tail[a:b],
            }
        )
    return out


def build_cache(uri: str, shards: list[list[dict]], k: int, codec_spec: str) -> int:
    ctx = CodecContext(vocab_size=VOCAB, top_k=k, rs_samples=0)
    codec = get_codec(codec_spec)
    if hasattr(codec, "calibrate"):  # e.g. a frequency-rank table fitted on the first shard
        codec = codec.calibrate(shards[0], ctx)
    header = Manifest(
        teacher={"name": "synthetic-power-law", "backend": "none"},
        tokenizer={"name": "smollm2-vocab", "vocab_size": VOCAB, "pad_token_id": 0},
        capture={"top_k": k, "rs_samples": 0, "seq_len": SEQ, "packing": "pack"},
        codec=codec.describe(),
        corpus={"fingerprint": f"synthetic-{k}"},
    )
    writer = CacheWriter.open(uri, header)
    for u, samples in enumerate(shards):
        writer.commit([write_shard(writer.store, f"u{u:03d}", encode_table(samples, codec, ctx))])
    return writer.finish().num_bytes


def write_baseline(path: Path, shards: list[list[dict]], k: int) -> int:
    """uint16 ids + fp16 log-probs + fp16 tail as Parquet list columns, zstd: the naive way."""
    writer = None
    for samples in shards:
        ids = np.concatenate([s["topk_ids"] for s in samples]).astype(np.uint16).reshape(-1)
        lps = np.concatenate([s["topk_logprobs"] for s in samples]).astype(np.float16).reshape(-1)
        tail = np.concatenate([s["tail_logmass"] for s in samples]).astype(np.float16)
        inp = np.concatenate([s["input_ids"] for s in samples])
        rows = len(samples)
        off = pa.array(np.arange(rows + 1, dtype=np.int32) * SEQ)
        offk = pa.array(np.arange(rows + 1, dtype=np.int32) * SEQ * k)
        table = pa.table(
            {
                "input_ids": pa.ListArray.from_arrays(off, pa.array(inp)),
                "topk_ids": pa.ListArray.from_arrays(offk, pa.array(ids)),
                "topk_logprobs": pa.ListArray.from_arrays(offk, pa.array(lps)),
                "tail_logmass": pa.ListArray.from_arrays(off, pa.array(tail)),
            }
        )
        if writer is None:
            writer = pq.ParquetWriter(path, table.schema, compression="zstd")
        writer.write_table(table, row_group_size=128)
    writer.close()
    return path.stat().st_size


# -- measurements -------------------------------------------------------------------------
def _best(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def read_dataset(uri: str, **options) -> int:
    n = 0
    for s in CacheDataset(uri, **options):
        n += len(s["topk_ids"])
    return n


def read_collate(uri: str, batch: int = 8) -> int:
    n, buf = 0, []
    for s in CacheDataset(uri):
        buf.append(s)
        if len(buf) == batch:
            n += int(collate(buf)["attention_mask"].sum())
            buf = []
    if buf:
        n += int(collate(buf)["attention_mask"].sum())
    return n


def read_workers(uri: str, workers: int = 2, batch: int = 8) -> int:
    loader = make_dataloader(CacheDataset(uri), batch_size=batch, num_workers=workers)
    return sum(int(b["attention_mask"].sum()) for b in loader)


def read_baseline(path: Path, k: int) -> int:
    table = pq.read_table(path)
    ids = table.column("topk_ids").combine_chunks().flatten().to_numpy().reshape(-1, k)
    lps = table.column("topk_logprobs").combine_chunks().flatten().to_numpy().reshape(-1, k)
    tail = table.column("tail_logmass").combine_chunks().flatten().to_numpy()
    assert len(ids) == len(lps) == len(tail)
    return len(ids)


def start_moto():
    from moto.server import ThreadedMotoServer

    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        os.environ.setdefault(key, "bench")
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    os.environ["AWS_ENDPOINT_URL"] = endpoint
    import boto3

    boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket="bench")
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    return server


def upload(local_uri: str, s3_uri: str, max_shards: int) -> tuple[str, int]:
    """Copy a local cache (manifest trimmed to ``max_shards``) to S3."""
    import fsspec

    fs = fsspec.filesystem("s3", endpoint_url=os.environ["AWS_ENDPOINT_URL"])
    manifest = Manifest.from_json(Path(local_uri, "manifest.json").read_bytes())
    manifest.shards = manifest.shards[:max_shards]
    root = s3_uri.removeprefix("s3://")
    for shard in manifest.shards:
        fs.pipe_file(f"{root}/{shard.path}", Path(local_uri, shard.path).read_bytes())
    fs.pipe_file(f"{root}/manifest.json", manifest.to_json())
    return s3_uri, manifest.num_tokens


def run(tokens: int, ks: list[int], codecs: list[str], s3_fraction: float, repeats: int) -> dict:
    rows_per_shard = max(1, tokens // SEQ // SHARDS)
    work = Path(tempfile.mkdtemp(prefix="lc-bench-loader-"))
    server = start_moto() if s3_fraction > 0 else None
    results: dict = {"codecs": {}, "baseline": {}}
    try:
        for k in ks:
            t0 = time.perf_counter()
            shards = [make_shard_samples(1000 * k + u, rows_per_shard, k) for u in range(SHARDS)]
            n_tok = SHARDS * rows_per_shard * SEQ
            log.info("k=%d: %d tokens generated in %.1fs", k, n_tok, time.perf_counter() - t0)
            base = work / f"baseline-k{k}.parquet"
            base_bytes = write_baseline(base, shards, k)
            t = _best(lambda: read_baseline(base, k), repeats)  # noqa: B023
            results["baseline"][k] = {
                "bytes_per_token": round(base_bytes / n_tok, 1),
                "tok_s": round(n_tok / t),
            }
            for spec in codecs:
                uri = str(work / f"{spec.split(':')[0]}-k{k}")
                t0 = time.perf_counter()
                nbytes = build_cache(uri, shards, k, spec)
                log.info("k=%d %s: cache written in %.1fs", k, spec, time.perf_counter() - t0)
                entry = {"bytes_per_token": round(nbytes / n_tok, 1)}
                t = _best(lambda: read_dataset(uri), repeats)  # noqa: B023
                entry["dataset_tok_s"] = round(n_tok / t)
                # Contention-robust: the same machine, moments apart, same content.
                entry["dataset_vs_baseline"] = round(
                    entry["dataset_tok_s"] / results["baseline"][k]["tok_s"], 2
                )
                t = _best(lambda: read_dataset(uri, shuffle=False), repeats)  # noqa: B023
                entry["dataset_noshuffle_tok_s"] = round(n_tok / t)
                t = _best(lambda: read_collate(uri), repeats)  # noqa: B023
                entry["collate_tok_s"] = round(n_tok / t)
                t = _best(lambda: read_workers(uri), repeats)  # noqa: B023
                entry["dataloader_2workers_tok_s"] = round(n_tok / t)
                if server is not None and spec == codecs[0]:
                    s3_uri, s3_tok = upload(
                        uri, f"s3://bench/k{k}", max(1, round(SHARDS * s3_fraction))
                    )
                    t = _best(lambda: read_dataset(s3_uri), repeats)  # noqa: B023
                    entry["s3_tok_s"] = round(s3_tok / t)
                results["codecs"].setdefault(spec, {})[k] = entry
                shutil.rmtree(uri, ignore_errors=True)
            del shards
    finally:
        if server is not None:
            server.stop()
        shutil.rmtree(work, ignore_errors=True)
    results["tokens"] = SHARDS * rows_per_shard * SEQ
    return results


def print_table(res: dict) -> None:
    print(
        "| content | k | bytes/token | CacheDataset tok/s | x baseline | no shuffle | + collate "
        "| DataLoader, 2 workers | S3 (moto) |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for spec, by_k in res["codecs"].items():
        for k, e in by_k.items():
            s3 = f"{e['s3_tok_s']:,}" if "s3_tok_s" in e else "-"
            print(
                f"| {spec} | {k} | {e['bytes_per_token']} | {e['dataset_tok_s']:,} | "
                f"{e['dataset_vs_baseline']} | "
                f"{e['dataset_noshuffle_tok_s']:,} | {e['collate_tok_s']:,} | "
                f"{e['dataloader_2workers_tok_s']:,} | {s3} |"
            )
    for k, e in res["baseline"].items():
        print(
            f"| uint16+fp16 Parquet, plain pyarrow read | {k} | {e['bytes_per_token']} | "
            f"{e['tok_s']:,} | 1 | - | - | - | - |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tokens", type=int, default=1 << 20)
    parser.add_argument("--ks", default="64,128")
    parser.add_argument(
        "--codecs",
        default="",
        help=f"comma-separated specs; default: the default codec and raw ({', '.join(available())})",
    )
    parser.add_argument(
        "--s3-fraction", type=float, default=0.25, help="share of shards read from S3; 0 skips S3"
    )
    parser.add_argument("--repeats", type=int, default=1, help="best of N timings")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    ks = [int(x) for x in args.ks.split(",")]
    t0 = time.perf_counter()
    codecs = [c for c in args.codecs.split(",") if c] or list(dict.fromkeys([DEFAULT_CODEC, "raw"]))
    res = run(args.tokens, ks, codecs, args.s3_fraction, args.repeats)
    res["wall_s"] = round(time.perf_counter() - t0, 1)
    res["default_codec"] = DEFAULT_CODEC
    res["target_codec"] = codecs[0]
    res["content"] = "synthetic power-law distributions (see module docstring)"
    res["machine"] = {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "load_avg_1m_at_end": round(os.getloadavg()[0], 1),  # >2 means other work competed
    }
    print_table(res)
    k64 = res["codecs"][codecs[0]].get(64)
    res["targets"] = {}
    if k64:
        res["targets"]["decoded_tok_s_k64_local"] = {
            "value": k64["dataset_tok_s"],
            "target": TARGET_TOK_S,
            "op": ">=",
            "unit": "tokens/s",
        }
    print(json.dumps(res))


if __name__ == "__main__":
    main()
