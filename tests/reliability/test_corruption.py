"""A flipped byte in the manifest: refused as a whole, or caught and pinned on the shard whose
entry it changed, by `verify` and by the loader (fail by default, skip with a warning on request).

Flipped bytes inside shards are covered by tests/cli/test_info_verify.py
(verify, Cache.iter_samples) and tests/data/test_loader_dataset.py (CacheDataset)."""

from __future__ import annotations

import json
import logging
import os
import shutil

import pytest
from config_sections import capture_config
from rel_helpers import build_kwargs

from logitcache.capture import build_cache
from logitcache.cli import main
from logitcache.data import CacheDataset
from logitcache.errors import CorruptShardError, ManifestError
from logitcache.format import open_cache, verify_cache


@pytest.fixture(scope="module")
def pristine(tmp_path_factory, tiny_llama_dir):
    from pydoc_data.topics import topics

    tmp = tmp_path_factory.mktemp("pristine")
    paragraphs = [p.strip() for k in sorted(topics)[:10] for p in topics[k].split("\n\n")]
    corpus_jsonl = str(tmp / "paragraphs.jsonl")
    with open(corpus_jsonl, "w") as fh:
        fh.writelines(json.dumps({"text": p}) + "\n" for p in paragraphs if len(p) > 40)
    out = str(tmp / "cache")
    build_cache(
        capture_config(
            **build_kwargs(str(tiny_llama_dir), corpus_jsonl, out, max_tokens=800, unit_tokens=100)
        )
    )
    return out


@pytest.fixture
def cache(pristine, tmp_path):
    uri = str(tmp_path / "cache")
    shutil.copytree(pristine, uri)
    return uri


def _flip_in_manifest(uri: str, shard_index: int, field: str, rechecksum: bool = True) -> str:
    """Change one byte of ``shards[i][field]`` in the raw manifest text; return the shard path."""
    path = os.path.join(uri, "manifest.json")
    raw = open(path, "rb").read()
    entry = json.loads(raw)["shards"][shard_index]
    value = str(entry[field])
    needle = f'"{field}": {json.dumps(entry[field])}'.encode()
    at = raw.index(needle) + len(needle) - 2 if isinstance(entry[field], str) else None
    if at is None:  # an integer: change its last digit
        at = raw.index(needle) + len(needle) - 1
    old = raw[at : at + 1]
    new = {b"0": b"1"}.get(old, b"0") if old.isdigit() else (b"a" if old != b"a" else b"b")
    flipped = raw[:at] + new + raw[at + 1 :]
    if rechecksum:  # a writer that recorded a wrong entry: the manifest's own checksum agrees
        from logitcache.format.manifest import content_checksum

        d = json.loads(flipped)
        flipped = flipped.replace(d["checksum"].encode(), content_checksum(d).encode())
    open(path, "wb").write(flipped)
    assert value  # the field existed
    return entry["path"]


@pytest.mark.parametrize("field", ["rows", "sha256"])
def test_flipped_manifest_byte_fails_its_checksum(cache, field, capsys):
    _flip_in_manifest(cache, 1, field, rechecksum=False)
    with pytest.raises(ManifestError, match="does not match its checksum"):
        open_cache(cache)
    assert main(["verify", cache]) != 0
    assert "checksum" in capsys.readouterr().err


@pytest.mark.parametrize("field", ["rows", "tokens", "bytes", "sha256", "path"])
def test_flipped_shard_entry_is_pinned_on_that_shard(cache, field, capsys, caplog, tmp_path):
    shards = open_cache(cache).shards
    assert len(shards) >= 3
    expected = {
        s["sample_id"]
        for s in open_cache(cache).iter_samples([sh for i, sh in enumerate(shards) if i != 1])
    }
    bad = _flip_in_manifest(cache, 1, field)
    report = verify_cache(open_cache(cache))
    assert not report.ok and report.shards_checked == len(shards)
    named = {p.path for p in report.problems}
    assert len(named) == 1 and (bad in named or field == "path"), report.problems
    assert main(["verify", cache]) != 0
    assert "shards/" in capsys.readouterr().out

    # The loader: fails by default naming the shard, skips it with a warning on request.
    loader_kw = {"shuffle": False}
    if field == "sha256":  # detected where the loader checks whole files
        loader_kw["local_cache_dir"] = str(tmp_path / "local")
    good = {s.path for i, s in enumerate(shards) if i != 1}
    if field in ("tokens", "bytes"):
        # Bookkeeping only: the shard's bytes still match its sha256, rows and page checksums,
        # so the targets the loader serves are intact; verify (above) reports the mismatch.
        loader_kw.pop("local_cache_dir", None)
        got = [s["sample_id"] for s in CacheDataset(cache, **loader_kw)]
        assert len(got) == len(set(got)) == len(expected) + shards[1].rows
        return
    with pytest.raises(CorruptShardError) as err:
        list(CacheDataset(cache, **loader_kw))
    assert err.value.path not in good
    with caplog.at_level(logging.WARNING):
        got = [s["sample_id"] for s in CacheDataset(cache, skip_bad_shards=True, **loader_kw)]
    assert any("shards/" in r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING)
    assert sorted(got) == sorted(expected)


@pytest.mark.parametrize("offset", [0, 1, -2, 0.5])
def test_flipped_byte_breaking_the_json_refuses_the_cache(cache, offset, capsys):
    path = os.path.join(cache, "manifest.json")
    raw = bytearray(open(path, "rb").read())
    structural = [i for i, b in enumerate(raw) if chr(b) in '{}[]:,"']
    at = (
        structural[int(offset * len(structural))]
        if isinstance(offset, float)
        else structural[offset]
    )
    raw[at] ^= 0x40
    open(path, "wb").write(bytes(raw))
    with pytest.raises(ManifestError, match="manifest"):
        open_cache(cache)
    with pytest.raises(ManifestError):
        CacheDataset(cache)
    assert main(["verify", cache]) == 2
    assert "manifest" in capsys.readouterr().err
