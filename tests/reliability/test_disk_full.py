"""Disk full during a build (a 96 KiB tmpfs): a StorageError naming the file and the fix, no
temporary files left, and the committed part of the cache stays readable and verifiable."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest
from config_sections import capture_config
from rel_helpers import build_kwargs

from logitcache.capture import build_cache
from logitcache.errors import StorageError
from logitcache.format import open_cache, verify_cache


@pytest.fixture
def tiny_disk(tmp_path):
    mnt = tmp_path / "tiny-disk"
    mnt.mkdir()
    proc = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=96k", "tmpfs", str(mnt)], capture_output=True
    )
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here (needs root): {proc.stderr.decode()[:200]}")
    yield mnt
    subprocess.run(["umount", str(mnt)], check=False)


def test_disk_full_is_a_clear_error_and_the_cache_stays_consistent(
    tiny_disk, teacher_dir, paragraphs_jsonl, tmp_path
):
    out = str(tiny_disk / "cache")
    kw = build_kwargs(teacher_dir, paragraphs_jsonl, out, unit_tokens=80, max_tokens=2000)
    with pytest.raises(StorageError) as err:
        build_cache(capture_config(**kw))
    msg = str(err.value)
    assert "No space left on device" in msg and out in msg and "free space" in msg
    leftovers = [n for _, _, files in os.walk(out) for n in files if n.startswith(".tmp-")]
    assert leftovers == []
    cache = open_cache(out)
    assert verify_cache(cache).ok and cache.manifest.status == "building"
    committed = {s.unit for s in cache.shards}
    assert committed  # some units made it before the disk filled
    # Free space (move the cache to a bigger disk) and re-run: it finishes, nothing redone.
    big = str(tmp_path / "moved")
    shutil.copytree(out, big)
    m = build_cache(capture_config(**{**kw, "out": big}))
    assert m.status == "complete" and m.num_tokens == 2000
    assert m.stats["run"]["units_skipped"] == len(committed)
    assert verify_cache(open_cache(big)).ok
