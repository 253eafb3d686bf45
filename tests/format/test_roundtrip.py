"""Write a cache through the commit protocol and read it back, on every storage backend."""

from __future__ import annotations

import json

import numpy as np
import pytest

import logitcache
from logitcache.codecs import CodecContext, get_codec
from logitcache.errors import CacheNotFoundError, IncompatibleCacheError, ManifestError
from logitcache.format import CacheWriter, Manifest, write_shard
from logitcache.format.shard import encode_table


def header(ctx: CodecContext, codec_spec: str = "raw", **capture) -> Manifest:
    return Manifest(
        teacher={"name": "tiny-random", "backend": "transformers", "weights_sha256": "ab" * 32},
        tokenizer={"name": "tiny", "vocab_size": ctx.vocab_size, "vocab_sha256": "cd" * 32},
        capture={"top_k": ctx.top_k, "rs_samples": ctx.rs_samples, "seq_len": 16, **capture},
        codec=get_codec(codec_spec).describe(),
        corpus={"fingerprint": "corpus-1"},
    )


def build(uri, ctx, units, factory, codec_spec="raw"):
    writer = CacheWriter.open(uri, header(ctx, codec_spec))
    codec = get_codec(codec_spec)
    expected = {}
    for u in range(units):
        samples = factory(ctx, seed=u)
        expected.update({s["sample_id"]: s for s in samples})
        info = write_shard(writer.store, f"unit-{u:03d}", encode_table(samples, codec, ctx))
        writer.commit([info])
    writer.finish({"wall_s": 1.0})
    return expected


@pytest.mark.parametrize("top_k,rs", [(4, 0), (3, 20), (0, 20)])
def test_roundtrip_every_storage(cache_uri, sample_factory, top_k, rs):
    ctx = CodecContext(vocab_size=300, top_k=top_k, rs_samples=rs)
    expected = build(cache_uri, ctx, units=3, factory=sample_factory)

    cache = logitcache.open_cache(cache_uri)
    assert cache.manifest.status == "complete"
    assert cache.manifest["capture"]["alignment"] == "next-token"
    got = list(cache.iter_samples(verify_checksums=True))
    assert sorted(s["sample_id"] for s in got) == sorted(expected)
    for s in got:
        e = expected[s["sample_id"]]
        np.testing.assert_array_equal(s["input_ids"], e["input_ids"])
        np.testing.assert_array_equal(s["loss_mask"], e["loss_mask"])
        assert s["topk_logprobs"].dtype == np.float32
        assert s["topk_ids"].shape == (len(e["input_ids"]), top_k)
        if top_k:
            np.testing.assert_array_equal(s["topk_ids"], e["topk_ids"])
            np.testing.assert_array_equal(s["topk_logprobs"], e["topk_logprobs"])
            np.testing.assert_array_equal(s["tail_logmass"], e["tail_logmass"])
        if rs:
            np.testing.assert_array_equal(s["rs_ids"], e["rs_ids"])
            np.testing.assert_array_equal(s["rs_counts"], e["rs_counts"])
            assert (s["rs_counts"].sum(axis=1) == rs).all()
        else:
            assert "rs_ids" not in s


def test_large_vocabulary_ids(tmp_path, sample_factory):
    ctx = CodecContext(vocab_size=262_144, top_k=2)
    samples = sample_factory(CodecContext(vocab_size=64, top_k=2), lengths=(4,))
    samples[0]["topk_ids"] = np.array([[262_143, 70_000]] * 4, np.int32)
    samples[0]["input_ids"] = np.array([0, 65_536, 200_000, 262_143], np.int32)
    uri = str(tmp_path / "c")
    writer = CacheWriter.open(uri, header(ctx))
    writer.commit([write_shard(writer.store, "u0", encode_table(samples, get_codec("raw"), ctx))])
    (got,) = list(logitcache.open_cache(uri).iter_samples())
    assert got["topk_ids"].max() == 262_143
    np.testing.assert_array_equal(got["input_ids"], samples[0]["input_ids"])


def test_uncommitted_shard_is_invisible_and_cleaned(tmp_path, sample_factory):
    ctx = CodecContext(vocab_size=100, top_k=3)
    uri = str(tmp_path / "c")
    writer = CacheWriter.open(uri, header(ctx))
    table = encode_table(sample_factory(ctx), get_codec("raw"), ctx)
    writer.commit([write_shard(writer.store, "u0", table)])
    orphan = write_shard(writer.store, "u1", table)  # "crash" before commit
    cache = logitcache.open_cache(uri)
    assert [s.unit for s in cache.shards] == ["u0"]
    assert len(list(cache.iter_samples())) == 3
    resumed = CacheWriter.open(uri, header(ctx))
    assert resumed.committed_units == {"u0"}
    assert resumed.cleanup_orphans() == [orphan.path]
    assert not (tmp_path / "c" / orphan.path).exists()


def test_unit_committed_twice_is_refused(tmp_path, sample_factory):
    ctx = CodecContext(vocab_size=100, top_k=3)
    writer = CacheWriter.open(str(tmp_path / "c"), header(ctx))
    table = encode_table(sample_factory(ctx), get_codec("raw"), ctx)
    writer.commit([write_shard(writer.store, "u0", table)])
    with pytest.raises(ManifestError, match="already committed"):
        writer.commit([write_shard(writer.store, "u0", table)])
    assert len(logitcache.open_cache(str(tmp_path / "c")).shards) == 1


def test_resume_with_different_capture_is_refused(tmp_path):
    ctx = CodecContext(vocab_size=100, top_k=3)
    CacheWriter.open(str(tmp_path / "c"), header(ctx))
    other = CodecContext(vocab_size=100, top_k=5)
    with pytest.raises(IncompatibleCacheError, match=r"capture\.top_k: 3 in cache, 5 requested"):
        CacheWriter.open(str(tmp_path / "c"), header(other))


def test_missing_cache_names_the_uri(tmp_path):
    with pytest.raises(CacheNotFoundError, match="manifest.json not found"):
        logitcache.open_cache(str(tmp_path / "nothing"))


@pytest.mark.parametrize(
    "bad", ["../outside.parquet", "/etc/passwd", "s3://other/x.parquet", "a/../../b"]
)
def test_manifest_path_outside_root_is_refused(tmp_path, bad):
    ctx = CodecContext(vocab_size=100, top_k=3)
    CacheWriter.open(str(tmp_path / "c"), header(ctx))
    path = tmp_path / "c" / "manifest.json"
    d = json.loads(path.read_text())
    d["shards"] = [{"path": bad, "unit": "u", "rows": 1, "tokens": 1, "bytes": 1, "sha256": "0"}]
    d.pop("checksum")  # a hostile manifest need not carry one
    path.write_text(json.dumps(d))
    with pytest.raises(ManifestError, match="cache root|relative path"):
        logitcache.open_cache(str(tmp_path / "c"))


def test_newer_format_version_is_refused(tmp_path):
    from logitcache.errors import FormatVersionError

    ctx = CodecContext(vocab_size=100, top_k=3)
    CacheWriter.open(str(tmp_path / "c"), header(ctx))
    path = tmp_path / "c" / "manifest.json"
    d = json.loads(path.read_text())
    d["format_version"] = 99
    path.write_text(json.dumps(d))
    with pytest.raises(FormatVersionError, match="upgrade logitcache"):
        logitcache.open_cache(str(tmp_path / "c"))


def test_manifest_checksum_detects_a_flipped_byte_anywhere(tmp_path):
    """Every single-bit change of every byte of a written manifest is refused on read."""
    ctx = CodecContext(vocab_size=100, top_k=3)
    CacheWriter.open(str(tmp_path / "c"), header(ctx))
    path = tmp_path / "c" / "manifest.json"
    raw = path.read_bytes()
    assert logitcache.open_cache(str(tmp_path / "c")).manifest.integrity == "verified"
    undetected = []
    for at in range(len(raw)):
        for bit in (0x01, 0x20):
            flipped = bytearray(raw)
            flipped[at] ^= bit
            try:
                Manifest.from_json(bytes(flipped))
            except ManifestError:
                continue
            undetected.append((at, bit, raw[at : at + 1]))
    assert not undetected, undetected[:5]


def test_manifest_without_checksum_opens_unchecked_with_a_note(tmp_path, caplog):
    ctx = CodecContext(vocab_size=100, top_k=3)
    CacheWriter.open(str(tmp_path / "c"), header(ctx))
    path = tmp_path / "c" / "manifest.json"
    d = json.loads(path.read_text())
    del d["checksum"]  # as written before manifests carried one
    path.write_text(json.dumps(d, indent=1))
    with caplog.at_level("INFO"):
        cache = logitcache.open_cache(str(tmp_path / "c"))
    assert cache.manifest.integrity == "unchecked"
    assert "no checksum" in caplog.text
    # The next commit writes it with a checksum.
    writer = CacheWriter.open(str(tmp_path / "c"), header(ctx))
    writer.finish()
    assert logitcache.open_cache(str(tmp_path / "c")).manifest.integrity == "verified"


def test_codec_is_fixed_once_a_shard_is_listed(tmp_path, sample_factory):
    """set_codec records the first unit's fitted codec; once a shard is listed it refuses any
    other (every listed shard was encoded with the manifest's codec)."""
    ctx = CodecContext(vocab_size=1000, top_k=4, rs_samples=0)
    samples = sample_factory(ctx, seed=0)
    fitted = get_codec("lc1").calibrate(samples, ctx)
    writer = CacheWriter.open(str(tmp_path / "c"), header(ctx, "lc1"))
    writer.set_codec(fitted.describe())
    info = write_shard(writer.store, "u0", encode_table(samples, fitted, ctx))
    writer.commit([info])
    writer.set_codec(fitted.describe())  # the same codec again is fine
    with pytest.raises(ManifestError, match="cannot join a cache"):
        writer.set_codec(get_codec("lc1").describe())
    assert writer.manifest.codec == fitted.describe()
