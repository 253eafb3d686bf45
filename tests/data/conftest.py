"""Small multi-shard, multi-row-group caches for the loader tests."""

from __future__ import annotations

import pytest

import logitcache.format.shard as shard_mod
from logitcache.codecs import CodecContext, get_codec
from logitcache.format import CacheWriter, Manifest, write_shard
from logitcache.format.shard import encode_table


def _header(ctx: CodecContext, codec_spec: str) -> Manifest:
    return Manifest(
        teacher={"name": "synthetic", "backend": "transformers", "weights_sha256": "ab" * 32},
        tokenizer={"name": "tiny", "vocab_size": ctx.vocab_size, "pad_token_id": 0},
        capture={"top_k": ctx.top_k, "rs_samples": ctx.rs_samples, "seq_len": 32},
        codec=get_codec(codec_spec).describe(),
        corpus={"fingerprint": "loader-tests"},
    )


@pytest.fixture
def build_cache(sample_factory, monkeypatch):
    """``build_cache(uri, ...) -> {sample_id: sample}``: shards of several small row groups.

    The codec defaults to the lossless ``raw`` so tests can compare decoded payloads exactly;
    the loader is codec-agnostic (lc1's bounds are tested in tests/codecs).
    """

    def build(
        uri,
        *,
        shards=4,
        per_shard=12,
        top_k=4,
        rs_samples=0,
        row_group_tokens=40,
        codec_spec="raw",
        vocab_size=300,
    ):
        monkeypatch.setattr(shard_mod, "ROW_GROUP_TOKENS", row_group_tokens)
        ctx = CodecContext(vocab_size=vocab_size, top_k=top_k, rs_samples=rs_samples)
        codec = get_codec(codec_spec)
        writer = CacheWriter.open(uri, _header(ctx, codec_spec))
        expected = {}
        for u in range(shards):
            lengths = [8 + (3 * i + u) % 9 for i in range(per_shard)]
            samples = sample_factory(ctx, lengths=lengths, seed=u, prefix=f"u{u}-")
            for s in samples:
                s["loss_mask"][-1] = False
            expected.update({s["sample_id"]: s for s in samples})
            info = write_shard(writer.store, f"unit-{u:03d}", encode_table(samples, codec, ctx))
            writer.commit([info])
        writer.finish()
        return expected

    return build
