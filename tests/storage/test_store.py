"""Storage conformance: the same behaviour on local disk, memory:// and S3 (moto)."""

from __future__ import annotations

import pytest

from logitcache.errors import ManifestError, StorageError
from logitcache.storage import Store, check_relative, parse_storage_options, redact_uri


def test_write_read_list_delete(cache_uri):
    store = Store.open(cache_uri)
    assert not store.exists("shards/a.bin")
    store.write_bytes("shards/a.bin", b"hello")
    store.write_bytes("shards/b.bin", b"world!")
    store.invalidate()
    assert store.read_bytes("shards/a.bin") == b"hello"
    assert store.size("shards/b.bin") == 6
    assert store.list("shards") == ["shards/a.bin", "shards/b.bin"]
    with store.open_input("shards/b.bin") as fh:
        fh.seek(2)
        assert fh.read(3) == b"rld"
    store.delete("shards/a.bin")
    store.invalidate()
    assert store.list("shards") == ["shards/b.bin"]
    assert store.list("nothing-here") == []


def test_overwrite_is_whole(cache_uri):
    store = Store.open(cache_uri)
    store.write_bytes("manifest.json", b"x" * 1000)
    store.write_bytes("manifest.json", b"short")
    store.invalidate()
    assert store.read_bytes("manifest.json") == b"short"


def test_local_write_leaves_no_temporary_files(tmp_path):
    store = Store.open(str(tmp_path / "c"))
    store.write_bytes("shards/x.parquet", b"data")
    assert sorted(p.name for p in (tmp_path / "c" / "shards").iterdir()) == ["x.parquet"]


def test_file_uri_and_plain_path_are_the_same_place(tmp_path):
    Store.open(str(tmp_path)).write_bytes("f.txt", b"1")
    assert Store.open(f"file://{tmp_path}").read_bytes("f.txt") == b"1"


def test_s3_endpoint_from_environment(s3_bucket, s3_endpoint, monkeypatch):
    # The fixture sets AWS_ENDPOINT_URL; nothing else tells s3fs where moto listens.
    store = Store.open(f"s3://{s3_bucket}/root")
    store.write_bytes("k.txt", b"v")
    import boto3

    body = boto3.client("s3", endpoint_url=s3_endpoint).get_object(
        Bucket=s3_bucket, Key="root/k.txt"
    )
    assert body["Body"].read() == b"v"


def test_s3_storage_options_json(s3_bucket, s3_endpoint, monkeypatch):
    monkeypatch.delenv("AWS_ENDPOINT_URL")
    import s3fs

    s3fs.S3FileSystem.clear_instance_cache()
    opts = f'{{"endpoint_url": "{s3_endpoint}", "key": "testing", "secret": "testing-secret-never-logged"}}'
    store = Store.open(f"s3://{s3_bucket}/opt", opts)
    store.write_bytes("a", b"1")
    assert store.read_bytes("a") == b"1"
    assert "testing-secret" not in repr(store)


@pytest.mark.parametrize(
    "bad", ["../x", "/abs", "s3://b/k", "a/../../x", "", "a\\b", "sp ace", "."]
)
def test_paths_must_stay_inside_root(bad):
    with pytest.raises(ManifestError):
        check_relative(bad)


def test_storage_options_errors_say_how_to_fix():
    assert parse_storage_options('{"anon": true}') == {"anon": True}
    assert parse_storage_options(None) == {}
    with pytest.raises(StorageError, match="not valid JSON"):
        parse_storage_options("{anon: true}")
    with pytest.raises(StorageError, match="JSON object"):
        parse_storage_options("[1, 2]")


def test_credentials_never_reach_the_uri():
    assert redact_uri("s3://AKIA:secret@bucket/x") == "s3://bucket/x"
    assert "secret" not in Store.open("memory://user:secret@host/x").uri


# -- conditional writes (the write lease's primitives) ------------------------------------------


def test_create_exclusive_once(cache_uri):
    from logitcache.errors import WriteConflictError

    store = Store.open(cache_uri)
    assert store.read_versioned("_lock.json") is None
    v1 = store.create_exclusive("_lock.json", b"first")
    assert store.read_versioned("_lock.json") == (b"first", v1)
    with pytest.raises(WriteConflictError):
        store.create_exclusive("_lock.json", b"second")
    assert store.read_versioned("_lock.json")[0] == b"first"


def test_replace_if_only_with_the_current_version(cache_uri):
    from logitcache.errors import WriteConflictError

    store = Store.open(cache_uri)
    v1 = store.create_exclusive("_lock.json", b"one")
    v2 = store.replace_if("_lock.json", b"two", v1)
    assert v2 != v1 and store.read_versioned("_lock.json") == (b"two", v2)
    with pytest.raises(WriteConflictError):  # stale version: someone else changed it first
        store.replace_if("_lock.json", b"three", v1)
    store.delete("_lock.json")
    with pytest.raises(WriteConflictError):  # vanished since read
        store.replace_if("_lock.json", b"four", v2)
    assert store.atomic_conditional_writes


def test_delete_if_only_with_the_current_version(cache_uri):
    from logitcache.errors import WriteConflictError

    store = Store.open(cache_uri)
    v1 = store.create_exclusive("_lock.json", b"one")
    if not store.conditional_delete:  # S3: not every S3-compatible store honours it
        assert cache_uri.startswith("s3://")
        with pytest.raises(NotImplementedError):
            store.delete_if("_lock.json", v1)
        return
    v2 = store.replace_if("_lock.json", b"two", v1)
    with pytest.raises(WriteConflictError):
        store.delete_if("_lock.json", v1)
    store.delete_if("_lock.json", v2)
    assert store.read_versioned("_lock.json") is None


def test_racing_creators_exactly_one_wins(cache_uri):
    import threading

    from logitcache.errors import WriteConflictError

    store = Store.open(cache_uri)
    wins, losses = [], []
    barrier = threading.Barrier(4)

    def go(i):
        barrier.wait()
        try:
            store.create_exclusive("_lock.json", f"writer {i}".encode())
            wins.append(i)
        except WriteConflictError:
            losses.append(i)

    threads = [threading.Thread(target=go, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(wins) == 1 and len(losses) == 3
    assert store.read_versioned("_lock.json")[0] == f"writer {wins[0]}".encode()


def test_s3_conflict_recognised_by_error_code_not_message(s3_bucket):
    from botocore.exceptions import ClientError

    from logitcache.storage.conditional import S3_CONFLICT_CODES, s3_error_code

    err = ClientError(
        {"Error": {"Code": "PreconditionFailed", "Message": "nope"}, "ResponseMetadata": {}},
        "PutObject",
    )
    wrapped = OSError(22, "At least one of the pre-conditions you specified did not hold")
    wrapped.__cause__ = err
    assert s3_error_code(wrapped) == "PreconditionFailed" in S3_CONFLICT_CODES
    # A failure that is not a lost race stays an error: the bucket does not exist.
    store = Store.open(f"s3://{s3_bucket}-missing/c")
    with pytest.raises(OSError) as info:
        store.replace_if("_lock.json", b"x", '"etag"')
    assert s3_error_code(info.value) not in S3_CONFLICT_CODES
    assert not isinstance(info.value, FileExistsError)


def _generic_store():
    """A filesystem logitcache has no conditional writes for (fsspec's DirFileSystem over
    memory): the write-then-read-back fallback."""
    import uuid

    import fsspec

    fs = fsspec.filesystem(
        "dir", path=f"/generic-{uuid.uuid4().hex[:8]}", fs=fsspec.filesystem("memory")
    )
    return Store(uri="dir://generic", fs=fs, root="cache")


def test_generic_fallback_keeps_the_sequential_rules(monkeypatch):
    from logitcache.errors import WriteConflictError
    from logitcache.storage import conditional

    monkeypatch.setattr(conditional.GenericBackend, "settle_s", 0.0)
    store = _generic_store()
    assert not store.atomic_conditional_writes
    v1 = store.create_exclusive("_lock.json", b"one")
    with pytest.raises(WriteConflictError):
        store.create_exclusive("_lock.json", b"again")
    v2 = store.replace_if("_lock.json", b"two", v1)
    with pytest.raises(WriteConflictError):
        store.replace_if("_lock.json", b"three", v1)
    assert store.read_versioned("_lock.json") == (b"two", v2)


def test_generic_fallback_detects_a_writer_that_overwrote_it(monkeypatch):
    from logitcache.errors import WriteConflictError
    from logitcache.storage import conditional

    store = _generic_store()
    # Another builder's write lands while this one waits to read its own bytes back.
    monkeypatch.setattr(
        conditional.time, "sleep", lambda s: store.write_bytes("_lock.json", b"theirs")
    )
    with pytest.raises(WriteConflictError, match="overwritten"):
        store.create_exclusive("_lock.json", b"ours")


def test_lease_on_the_generic_fallback_warns_and_works(monkeypatch, caplog):
    from logitcache.errors import LeaseHeldError
    from logitcache.format.lease import LeaseConfig, acquire_lease, read_lease
    from logitcache.storage import conditional

    monkeypatch.setattr(conditional.GenericBackend, "settle_s", 0.0)
    store = _generic_store()
    with caplog.at_level("WARNING"):
        held = acquire_lease(store, LeaseConfig(ttl_s=30), heartbeat=False)
    assert "no conditional writes" in caplog.text
    with pytest.raises(LeaseHeldError):
        acquire_lease(store, LeaseConfig(ttl_s=30), heartbeat=False)
    held.release()
    assert read_lease(store) is None
    acquire_lease(store, LeaseConfig(ttl_s=30), heartbeat=False).release()
