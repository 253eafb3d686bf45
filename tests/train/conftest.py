"""A small real cache for trainer tests: the tiny random Llama teacher (tests/conftest.py
``tiny_llama_dir``) scored over Python's documentation, written through the real commit
protocol (CacheWriter + write_shard + encode_table)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from logitcache.codecs import CodecContext, get_codec
from logitcache.format import CacheWriter, Manifest, write_shard
from logitcache.format.shard import encode_table

SEQ_LEN = 48
ROWS = 120
TOP_K = 16
RS_SAMPLES = 16


def _rows(tokenizer) -> np.ndarray:
    from pydoc_data.topics import topics

    text = "\n".join(topics[k] for k in sorted(topics))[:200_000]
    ids = np.asarray(tokenizer(text)["input_ids"], np.int32)
    usable = (len(ids) // SEQ_LEN) * SEQ_LEN
    return ids[:usable].reshape(-1, SEQ_LEN)[:ROWS]


@torch.no_grad()
def _score(model, rows: np.ndarray, seed: int) -> list[dict[str, np.ndarray]]:
    logp = torch.log_softmax(model(input_ids=torch.from_numpy(rows).long()).logits.float(), -1)
    top_lp, top_ids = logp.topk(TOP_K, dim=-1)
    tail = torch.log1p(-top_lp.exp().sum(-1).clamp(max=1 - 1e-7))
    g = torch.Generator().manual_seed(seed)
    samples = []
    for r in range(rows.shape[0]):
        draws = torch.multinomial(logp[r].exp(), RS_SAMPLES, replacement=True, generator=g)
        counts = torch.zeros_like(logp[r], dtype=torch.int32).scatter_add_(
            1, draws, torch.ones_like(draws, dtype=torch.int32)
        )
        width = int((counts > 0).sum(-1).max())
        order = counts.argsort(dim=-1, descending=True, stable=True)[:, :width]
        mask = np.ones(SEQ_LEN, bool)
        mask[-1] = False  # the last position predicts nothing inside the row
        samples.append(
            {
                "sample_id": f"pydoc-{seed}-{r:04d}",
                "input_ids": rows[r],
                "loss_mask": mask,
                "topk_ids": top_ids[r].numpy().astype(np.int32),
                "topk_logprobs": top_lp[r].numpy().astype(np.float32),
                "tail_logmass": tail[r].numpy().astype(np.float32),
                "rs_ids": order.numpy().astype(np.int32),
                "rs_counts": counts.gather(-1, order).numpy().astype(np.int32),
            }
        )
    return samples


def tokenizer_section(tokenizer, logits_width: int) -> dict:
    from logitcache.train.student import vocab_sha256

    return {
        "name": "tiny-pydoc-bpe",
        "vocab_size": logits_width,
        "tokenizer_size": len(tokenizer),
        "vocab_sha256": vocab_sha256(tokenizer),
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
    }


def write_kd_cache(uri: str, teacher_dir, rows: int = ROWS, shards: int = 3, seed: int = 0) -> str:
    """Score the first ``rows`` pydoc rows with the tiny teacher into a cache at ``uri``."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(teacher_dir))
    model = AutoModelForCausalLM.from_pretrained(str(teacher_dir)).eval()
    width = model.get_output_embeddings().weight.shape[0]
    data = _rows(tokenizer)[:rows]
    ctx = CodecContext(vocab_size=width, top_k=TOP_K, rs_samples=RS_SAMPLES)
    codec = get_codec("raw")
    header = Manifest(
        teacher={"name": "tiny-llama", "source": str(teacher_dir), "backend": "transformers"},
        tokenizer=tokenizer_section(tokenizer, width),
        capture={"top_k": TOP_K, "rs_samples": RS_SAMPLES, "seq_len": SEQ_LEN, "packing": "pack"},
        codec=codec.describe(),
        corpus={"fingerprint": f"pydoc-topics-{rows}"},
    )
    writer = CacheWriter.open(uri, header)
    for u, chunk in enumerate(np.array_split(data, shards)):
        table = encode_table(_score(model, chunk, seed=seed + u), codec, ctx)
        writer.commit([write_shard(writer.store, f"unit-{u}", table)])
    writer.finish({"rows": int(data.shape[0])})
    return uri


@pytest.fixture(scope="session")
def kd_cache(tmp_path_factory, tiny_llama_dir) -> str:
    """URI of a 3-shard cache (top-16 + 16 draws per position) from the tiny teacher."""
    return write_kd_cache(str(tmp_path_factory.mktemp("kd_cache") / "cache"), tiny_llama_dir)


@pytest.fixture
def small_kd_cache(tmp_path, tiny_llama_dir):
    """``small_kd_cache(rows)``: a one-shard cache of ``rows`` sequences (sample ids
    ``pydoc-9-0000``...)."""
    return lambda rows: write_kd_cache(
        str(tmp_path / f"cache-{rows}"), tiny_llama_dir, rows=rows, shards=1, seed=9
    )
