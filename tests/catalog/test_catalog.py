"""Catalog: stable keys, ls/find, reuse of a complete cache, extension of a grown corpus,
concurrent builders (local and moto S3), crashed builders, read-only readers."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections import Counter
from pathlib import Path

import fsspec
import pytest
from catalog_helpers import catalog_build, header, make_units
from fsspec.implementations.local import LocalFileSystem

import logitcache
from logitcache.catalog import Catalog, catalog_key, prepare_build
from logitcache.cli import main as cli_main
from logitcache.errors import LeaseHeldError, LeaseLostError, StorageError
from logitcache.format.lease import LeaseConfig, acquire_lease, read_lease

HERE = Path(__file__).resolve().parent


def sample_ids(uri: str) -> Counter:
    return Counter(s["sample_id"] for s in logitcache.open_cache(uri).iter_samples())


def expected_ids(units) -> Counter:
    return Counter(s["sample_id"] for samples in units.values() for s in samples)


# -- keys ----------------------------------------------------------------------------------


def test_key_ignores_corpus_and_load_location_but_not_label_settings():
    base = catalog_key(header("fp-1"))
    assert catalog_key(header("fp-2")) == base  # a grown corpus maps to the same cache
    assert catalog_key(header("fp-1", source="/home/bob/tiny")) == base  # same weights elsewhere
    assert catalog_key(header("fp-1", top_k=8)) != base
    other = header("fp-1")
    other.teacher["weights_sha256"] = "ef" * 32
    assert catalog_key(other) != base
    other = header("fp-1")
    other.tokenizer["eos_token_id"] = 7
    assert catalog_key(other) != base


def test_key_is_stable_across_processes_and_dict_order():
    h = header("fp-1")
    h.teacher = dict(reversed(list(h.teacher.items())))
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]);"
        "from catalog_helpers import header; from logitcache.catalog import catalog_key;"
        "print(catalog_key(header('fp-1')))"
    )
    env = {**os.environ, "PYTHONHASHSEED": "123"}
    out = subprocess.run(
        [sys.executable, "-c", code, str(HERE)], capture_output=True, text=True, env=env
    )
    assert out.stdout.strip() == catalog_key(h)


# -- reuse and extension ---------------------------------------------------------------------


def test_reuse_then_extend_computes_only_missing_units(tmp_path, sample_factory, capsys):
    root = str(tmp_path / "catalog")
    units = make_units(sample_factory, ["u-0", "u-1"])
    target, computed = catalog_build(root, units, "fp-1")
    assert target.action == "new" and computed == ["u-0", "u-1"]
    rec = read_lease(Catalog.open(root).cache_store(target.key))
    assert rec is None or rec.released  # the lease is given back when the build finishes

    again, computed = catalog_build(root, units, "fp-1")
    assert again.action == "reuse" and again.uri == target.uri and computed == []
    assert again.lease is None  # reuse never takes the write lease

    grown = {**units, **make_units(sample_factory, ["u-2"])}
    ext, computed = catalog_build(root, grown, "fp-2")
    assert ext.action == "extend" and ext.uri == target.uri and computed == ["u-2"]
    assert sample_ids(target.uri) == expected_ids(grown)  # every sample exactly once
    cache = logitcache.open_cache(target.uri)
    assert cache.manifest.corpus["fingerprint"] == "fp-2" and cache.manifest.status == "complete"

    # ls: one cache, with the extended totals
    (entry,) = Catalog.open(root).entries()
    assert entry["key"] == target.key and entry["tokens"] == cache.manifest.num_tokens
    assert entry["corpus_fingerprint"] == "fp-2" and entry["status"] == "complete"
    assert cli_main(["catalog", "ls", root]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split()[:4] == ["KEY", "TEACHER", "CORPUS", "K"]
    assert target.key[:12] in table[1] and "tiny-random" in table[1]
    assert cli_main(["catalog", "ls", root, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["key"] == target.key


def test_find_by_teacher_and_capture(tmp_path, sample_factory, capsys):
    root = str(tmp_path / "catalog")
    target, _ = catalog_build(root, make_units(sample_factory, ["u-0"]), "fp-1")
    cat = Catalog.open(root)
    assert [e["key"] for e in cat.find(teacher="tiny-random", top_k=4)] == [target.key]
    assert [e["key"] for e in cat.find(teacher="/models/tiny", seq_len=16)] == [target.key]
    assert cat.find(teacher="tiny-random", top_k=8) == []
    assert cat.find(teacher="other") == []
    assert cat.find(corpus_fingerprint="fp-1", complete_only=True)[0]["key"] == target.key
    assert cli_main(["catalog", "find", root, "--teacher", "tiny-random", "--top-k", "4"]) == 0
    assert target.key[:12] in capsys.readouterr().out
    assert cli_main(["catalog", "find", root, "--teacher", "nope"]) == 1


def test_reindex_rebuilds_a_lost_index(tmp_path, sample_factory):
    root = tmp_path / "catalog"
    target, _ = catalog_build(str(root), make_units(sample_factory, ["u-0"]), "fp-1")
    for f in (root / "index").iterdir():
        f.unlink()
    assert Catalog.open(str(root)).entries() == []
    assert [e["key"] for e in Catalog.open(str(root)).reindex()] == [target.key]


# -- concurrency ----------------------------------------------------------------------------


@pytest.mark.parametrize("storage", ["local", "s3"])
def test_two_concurrent_builders_one_computes(storage, tmp_path, sample_factory, request):
    if storage == "s3":
        root = f"s3://{request.getfixturevalue('s3_bucket')}/logitcache"
    else:
        root = str(tmp_path / "catalog")
    units = make_units(sample_factory, ["u-0", "u-1", "u-2"])
    barrier = threading.Barrier(2)
    results, errors = [], []

    def builder(wait_s):
        barrier.wait()
        try:
            results.append(catalog_build(root, units, "fp-1", lease=LeaseConfig(wait_s=wait_s)))
        except LeaseHeldError as exc:
            errors.append(exc)

    # The first builder to arrive writes; the other waits for it, then reuses the cache.
    threads = [threading.Thread(target=builder, args=(30,)) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    actions = sorted(t.action for t, _ in results)
    assert actions == ["new", "reuse"]
    assert sorted(len(c) for _, c in results) == [0, 3]
    assert sample_ids(results[0][0].uri) == expected_ids(units)


def test_second_builder_refuses_with_owner_while_first_writes(tmp_path, sample_factory):
    root = str(tmp_path / "catalog")
    units = make_units(sample_factory, ["u-0", "u-1"])
    first = prepare_build(root, header("fp-1"))
    try:
        with pytest.raises(LeaseHeldError, match=r"pid \d+ .*--wait-lease"):
            catalog_build(root, units, "fp-1", lease=LeaseConfig(wait_s=0))
    finally:
        first.release()
    _, computed = catalog_build(root, units, "fp-1")
    assert computed == ["u-0", "u-1"]


CRASHING_BUILDER = textwrap.dedent(
    """
    import sys, time
    sys.path.insert(0, sys.argv[1])
    from catalog_helpers import catalog_build, make_units
    from conftest import make_samples
    from logitcache.format.lease import LeaseConfig

    def hang(name):
        print("committed", name, flush=True)
        time.sleep(600)  # the parent kills us here: a builder crashing mid-build

    units = make_units(make_samples, ["u-0", "u-1", "u-2"])
    catalog_build(sys.argv[2], units, "fp-1", lease=LeaseConfig(ttl_s=2, heartbeat_s=0.5),
                  on_commit=hang)
    """
)


def test_crashed_builder_lease_expires_and_next_build_resumes(tmp_path, sample_factory):
    root = str(tmp_path / "catalog")
    proc = subprocess.Popen(
        [sys.executable, "-c", CRASHING_BUILDER, str(HERE), root],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(HERE.parent)},
    )
    try:
        assert proc.stdout.readline().split() == ["committed", "u-0"]
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    units = make_units(sample_factory, ["u-0", "u-1", "u-2"])
    # The holder ran on this host and is gone: its lease is taken over at once, no TTL wait.
    target, computed = catalog_build(root, units, "fp-1", lease=LeaseConfig(wait_s=0))
    assert target.action == "resume" and computed == ["u-1", "u-2"]
    assert sample_ids(target.uri) == expected_ids(units)


def test_lease_of_a_builder_on_another_host_holds_until_it_expires(tmp_path):
    from logitcache.format.lease import LEASE_NAME, LeaseRecord
    from logitcache.storage import Store

    store = Store.open(str(tmp_path / "cache"))
    now = time.time()
    foreign = LeaseRecord(
        owner_id="f" * 32, host="some-other-host", pid=1, created=now, expires=now + 1.5
    )
    store.write_bytes(LEASE_NAME, foreign.to_bytes())
    with pytest.raises(LeaseHeldError, match="some-other-host"):
        acquire_lease(store, LeaseConfig(wait_s=0), heartbeat=False)
    t0 = time.monotonic()
    lease = acquire_lease(store, LeaseConfig(wait_s=10, poll_s=0.1), heartbeat=False)
    assert 0.5 < time.monotonic() - t0 < 10  # waited for the expiry, then took over
    lease.release()


# -- read-only readers ------------------------------------------------------------------------


class ReadOnlyFileSystem(LocalFileSystem):
    """Local files through an fsspec filesystem that refuses every mutation, like a team's
    read-only bucket credentials would."""

    protocol = ("rofile",)
    root_marker = "/"

    def _refuse(self, *args, **kwargs):
        raise PermissionError("read-only credentials")

    pipe_file = put_file = rm_file = rm = mkdir = makedirs = touch = mv = cp_file = _refuse

    def _open(self, path, mode="rb", **kwargs):
        if mode != "rb":
            raise PermissionError("read-only credentials")
        return super()._open(path, mode, **kwargs)

    @classmethod
    def _strip_protocol(cls, path):
        path = str(path)
        if path.startswith("rofile://"):
            path = path[len("rofile://") :]
        return super()._strip_protocol(path)


def test_read_only_access_reads_finds_and_reuses(tmp_path, sample_factory):
    fsspec.register_implementation("rofile", ReadOnlyFileSystem, clobber=True)
    root = tmp_path / "catalog"
    units = make_units(sample_factory, ["u-0", "u-1"])
    target, _ = catalog_build(str(root), units, "fp-1")
    before = sorted((p.relative_to(root), p.stat().st_mtime_ns) for p in root.rglob("*"))

    ro_root = f"rofile://{root}"
    cat = Catalog.open(ro_root)
    (entry,) = cat.find(teacher="tiny-random", complete_only=True)
    cache = logitcache.open_cache(f"{ro_root}/caches/{entry['key']}")
    assert Counter(s["sample_id"] for s in cache.iter_samples()) == expected_ids(units)
    reused = prepare_build(ro_root, header("fp-1"))
    assert reused.reuse_complete
    with pytest.raises(StorageError, match="read-only"):  # the double really refuses writes
        cat.root.write_bytes("probe", b"x")
    assert sorted((p.relative_to(root), p.stat().st_mtime_ns) for p in root.rglob("*")) == before


def test_plain_out_builds_take_the_lease_too(tmp_path, sample_factory):
    from catalog_helpers import CTX

    from logitcache.codecs import get_codec
    from logitcache.format import write_shard
    from logitcache.format.shard import encode_table
    from logitcache.format.target import open_write_target

    out = str(tmp_path / "cache")
    units = make_units(sample_factory, ["u-0", "u-1"])
    first = open_write_target(out, header("fp-1"))
    assert first.action == "new"
    with pytest.raises(LeaseHeldError):
        open_write_target(out, header("fp-1"), lease=LeaseConfig(wait_s=0))
    writer = first.open_writer(header("fp-1"))
    name, samples = next(iter(units.items()))
    writer.commit([write_shard(writer.store, name, encode_table(samples, get_codec("raw"), CTX))])
    first.release()  # interrupted before finishing
    with pytest.raises(LeaseLostError, match="released"):
        writer.commit([])  # a writer without its lease may not touch the manifest

    second = open_write_target(out, header("fp-1"))
    assert second.action == "resume"
    with second:
        writer = second.open_writer(header("fp-1"))
        assert writer.committed_units == {"u-0"}
        writer.commit(
            [write_shard(writer.store, "u-1", encode_table(units["u-1"], get_codec("raw"), CTX))]
        )
        assert second.finish(writer.finish()) is None  # no catalog, no index
    assert sample_ids(out) == expected_ids(units)
