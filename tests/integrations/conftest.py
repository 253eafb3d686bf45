"""A small real cache for the trainer integrations: the tiny random Llama teacher scored over
Python's documentation, several shards of uneven size with small row groups (so ranks get
unequal shares), written through the real commit protocol."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import logitcache.format.shard as shard_mod
from logitcache.codecs import CodecContext, get_codec
from logitcache.format import CacheWriter, Manifest, write_shard
from logitcache.format.shard import encode_table

SEQ_LEN = 24
TOP_K = 8
SHARD_ROWS = (9, 5, 7, 3)  # 24 rows; unequal shards, row groups of ~3 rows


def tokenizer_section(tokenizer, width: int) -> dict:
    from logitcache.teachers import tokenizer_identity

    return tokenizer_identity(tokenizer, width)


@torch.no_grad()
def score_rows(model, rows: np.ndarray, prefix: str) -> list[dict]:
    logp = torch.log_softmax(model(input_ids=torch.from_numpy(rows).long()).logits.float(), -1)
    top_lp, top_ids = logp.topk(TOP_K, dim=-1)
    tail = torch.log1p(-top_lp.exp().sum(-1).clamp(max=1 - 1e-7))
    out = []
    for r in range(rows.shape[0]):
        mask = np.ones(rows.shape[1], bool)
        mask[-1] = False
        out.append(
            {
                "sample_id": f"{prefix}-{r:03d}",
                "input_ids": rows[r].astype(np.int32),
                "loss_mask": mask,
                "topk_ids": top_ids[r].numpy().astype(np.int32),
                "topk_logprobs": top_lp[r].numpy().astype(np.float32),
                "tail_logmass": tail[r].numpy().astype(np.float32),
            }
        )
    return out


@pytest.fixture(scope="session")
def int_cache(tmp_path_factory, tiny_llama_dir) -> str:
    """URI of a 4-shard, 24-row cache (top-8, lc1) from the tiny teacher."""
    from pydoc_data.topics import topics

    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(tiny_llama_dir))
    model = AutoModelForCausalLM.from_pretrained(str(tiny_llama_dir)).eval()
    width = model.get_output_embeddings().weight.shape[0]
    text = "\n".join(topics[k] for k in sorted(topics))[:40_000]
    ids = np.asarray(tokenizer(text)["input_ids"], np.int32)
    rows = ids[: sum(SHARD_ROWS) * SEQ_LEN].reshape(-1, SEQ_LEN)
    ctx = CodecContext(vocab_size=width, top_k=TOP_K, rs_samples=0)
    codec = get_codec("lc1")
    uri = str(tmp_path_factory.mktemp("int_cache") / "cache")
    header = Manifest(
        teacher={
            "name": str(tiny_llama_dir),
            "source": str(tiny_llama_dir),
            "backend": "transformers",
        },
        tokenizer=tokenizer_section(tokenizer, width),
        capture={"top_k": TOP_K, "rs_samples": 0, "seq_len": SEQ_LEN, "packing": "pack"},
        codec=codec.describe(),
        corpus={"fingerprint": "pydoc-integrations"},
    )
    saved = shard_mod.ROW_GROUP_TOKENS
    shard_mod.ROW_GROUP_TOKENS = 3 * SEQ_LEN
    try:
        writer = CacheWriter.open(uri, header)
        start = 0
        for u, n in enumerate(SHARD_ROWS):
            samples = score_rows(model, rows[start : start + n], f"u{u}")
            start += n
            writer.commit(
                [write_shard(writer.store, f"unit-{u}", encode_table(samples, codec, ctx))]
            )
        writer.finish()
    finally:
        shard_mod.ROW_GROUP_TOKENS = saved
    return uri


@pytest.fixture
def tiny_student(int_cache):
    """A fresh tiny Llama student on the cache's vocabulary (train.student preset)."""
    from logitcache.format import open_cache
    from logitcache.train.student import preset_student

    return preset_student("tiny", open_cache(int_cache).manifest, seed=0)
