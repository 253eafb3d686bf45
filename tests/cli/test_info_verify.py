"""`logitcache info` and `logitcache verify` on real caches, healthy and damaged."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from logitcache.cli import main
from logitcache.codecs import CodecContext, get_codec
from logitcache.errors import CorruptShardError
from logitcache.format import CacheWriter, Manifest, open_cache, write_shard
from logitcache.format.shard import encode_table


@pytest.fixture
def small_cache(tmp_path, sample_factory):
    ctx = CodecContext(vocab_size=500, top_k=4, rs_samples=0)
    uri = str(tmp_path / "cache")
    header = Manifest(
        teacher={"name": "tiny", "backend": "transformers", "weights_sha256": "0" * 64},
        tokenizer={"name": "tiny", "vocab_size": 500, "vocab_sha256": "1" * 64},
        capture={"top_k": 4, "rs_samples": 0, "seq_len": 16},
        codec=get_codec("raw").describe(),
    )
    writer = CacheWriter.open(uri, header)
    for u in range(3):
        table = encode_table(sample_factory(ctx, seed=u), get_codec("raw"), ctx)
        writer.commit([write_shard(writer.store, f"u{u}", table)])
    writer.finish()
    return uri


def test_info_json(small_cache, capsys):
    assert main(["info", small_cache, "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["shards"] == 3 and info["sequences"] == 9 and info["tokens"] == 69
    assert info["top_k"] == 4 and info["codec"] == "raw" and info["teacher"] == "tiny"
    assert info["bytes_per_token"] == pytest.approx(info["bytes"] / 69, abs=0.01)


def test_info_text(small_cache, capsys):
    assert main(["info", small_cache]) == 0
    out = capsys.readouterr().out
    assert "bytes_per_token" in out and "teacher" in out


def test_verify_ok(small_cache, capsys):
    assert main(["verify", small_cache]) == 0
    assert capsys.readouterr().out.startswith("OK: 3 shards checked, 9 sequences, 69 tokens")


def _flip_byte(path, offset):
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x55
    path.write_bytes(bytes(data))


def test_verify_names_each_bad_shard(small_cache, capsys, tmp_path):
    cache = open_cache(small_cache)
    first, second = cache.shards[0], cache.shards[1]
    _flip_byte(tmp_path / "cache" / first.path, first.bytes // 2)
    (tmp_path / "cache" / second.path).unlink()
    assert main(["verify", small_cache]) == 1
    out = capsys.readouterr().out
    assert f"BAD {first.path}: sha256 mismatch" in out
    assert f"BAD {second.path}: file is missing" in out
    assert "FAILED (2 problem(s))" in out


def test_reader_detects_flipped_byte_and_can_skip(small_cache, tmp_path, caplog):
    cache = open_cache(small_cache)
    bad = cache.shards[1]
    _flip_byte(tmp_path / "cache" / bad.path, bad.bytes // 3)
    with pytest.raises(CorruptShardError, match=bad.path):
        list(open_cache(small_cache).iter_samples(verify_checksums=True))
    got = list(open_cache(small_cache).iter_samples(verify_checksums=True, skip_bad_shards=True))
    assert len(got) == 6
    assert "skipping bad shard" in caplog.text


def test_missing_cache_is_a_clear_error(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "logitcache.cli", "info", str(tmp_path / "none")],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2
    assert "no cache at" in proc.stderr and "manifest.json not found" in proc.stderr


def test_info_text_summarises_a_fitted_codec_json_keeps_it(tmp_path, sample_factory, capsys):
    ctx = CodecContext(vocab_size=500, top_k=4, rs_samples=0)
    codec = get_codec("lc1").calibrate(sample_factory(ctx, seed=0), ctx)
    assert len(codec.spec) > 200  # the fitted rank table travels inside the spec
    uri = str(tmp_path / "lc1")
    header = Manifest(
        teacher={"name": "tiny"},
        tokenizer={"name": "tiny", "vocab_size": 500},
        capture={"top_k": 4, "rs_samples": 0, "seq_len": 16},
        codec=codec.describe(),
    )
    writer = CacheWriter.open(uri, header)
    writer.commit([write_shard(writer.store, "u0", encode_table(sample_factory(ctx), codec, ctx))])
    writer.finish()
    assert main(["info", uri]) == 0
    out = capsys.readouterr().out
    line = next(x for x in out.splitlines() if x.startswith("codec"))
    assert len(line) < 200 and "lc1(step=" in line and "rank table:" in line, line
    assert codec.describe()["ranks_sha256"][:12] in line
    assert "manifest_checksum" in out and "verified" in out
    assert main(["info", uri, "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["codec"] == codec.spec and info["codec_params"]["ranks_sha256"]
