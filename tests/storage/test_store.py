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
